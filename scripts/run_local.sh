#!/usr/bin/env bash
# Start master + web tier + one agent on loopback, with keys and a token, print how to try it; Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MASTER_PORT=${MSCHEDULE_MASTER_PORT:-9000}
ADMIN_PORT=${MSCHEDULE_ADMIN_PORT:-9001}
WEB_PORT=${MSCHEDULE_WEB_PORT:-8080}
RUN_DIR=.run
STATE=.state
mkdir -p "$RUN_DIR" "$STATE/web"
MASTER="tcp://127.0.0.1:${MASTER_PORT}"
ADMIN="tcp://127.0.0.1:${ADMIN_PORT}"
KEYS="$STATE/master/keys"
pids=()

cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "mschedule: stopped"
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

started() {  # name pid logfile: fail with the tier's own last lines if it died at start
    sleep 0.7
    if ! kill -0 "$2" 2>/dev/null; then
        echo "mschedule: the $1 did not start:" >&2
        tail -n 5 "$3" >&2
        exit 1
    fi
}

# an HTTP token, made once
TOKEN_FILE="$STATE/web/tokens"
[ -s "$TOKEN_FILE" ] || "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$TOKEN_FILE"
chmod 600 "$TOKEN_FILE"
TOKEN=$(head -n 1 "$TOKEN_FILE")

"$PY" appserver.py --bind "$MASTER" --admin-bind "$ADMIN" --state-dir "$STATE/master" --log-dir "$RUN_DIR" \
    --public-url "http://127.0.0.1:${WEB_PORT}" &
pids+=($!)
started master $! "$RUN_DIR/master.log"   # the master creates its keys in $KEYS at first start
"$PY" appwebserver.py --master "$ADMIN" --master-key "$KEYS/master.key" --client-key "$KEYS/admin.key_secret" \
    --token-file "$TOKEN_FILE" --host 127.0.0.1 --port "$WEB_PORT" --log-dir "$RUN_DIR" & pids+=($!)
started "web tier" $! "$RUN_DIR/web.log"
"$PY" app.py --master "$MASTER" --master-key "$KEYS/master.key" --state-dir "$STATE/agent" --label env=local \
    --log-dir "$RUN_DIR" & pids+=($!)
started agent $! "$RUN_DIR/agent.log"

# the local agent's key is pending until accepted: accept it, as an operator would
AGENT_ID=$(cat "$STATE/agent/agent_id")
for _ in $(seq 1 40); do
    if "$PY" appserver.py --state-dir "$STATE/master" --admin-bind "$ADMIN" keys accept "$AGENT_ID" \
        >/dev/null 2>&1; then break; fi
    sleep 0.25
done

URL="http://127.0.0.1:${WEB_PORT}"
AUTH="Authorization: Bearer $TOKEN"
cat <<MSG

mschedule is running (logs in $RUN_DIR/): master $MASTER (admin $ADMIN), web $URL, one agent ($AGENT_ID).
Links are CURVE-encrypted; the HTTP API wants the token in $TOKEN_FILE.

Open the web console at $URL/ in a browser; it asks once for this token:
  $TOKEN

Or use the command line (.venv/bin/mschedule; installed, just mschedule):
  export MSCHEDULE_URL=$URL MSCHEDULE_TOKEN=$TOKEN
  .venv/bin/mschedule agents
  .venv/bin/mschedule run 'echo hello from \$(hostname); uptime' --all
  .venv/bin/mschedule run 'echo "deploying \$VERSION"' --all --env VERSION=1.2
  echo 'date; df -h /' > report.sh && .venv/bin/mschedule jobs save report -f report.sh --label env=local
  .venv/bin/mschedule schedules create report --cron '*/5 * * * *' && .venv/bin/mschedule schedules list

Or with curl:
  curl -s -H "$AUTH" $URL/task/targets
  curl -s -H "$AUTH" -X POST $URL/task -d '{"script": "echo hello from \$(hostname); uptime", "targets": ["$AGENT_ID"]}'
  curl -s -H "$AUTH" -X POST $URL/result -d '{"task_id": "<task_id from above>"}'

Or in one go (wait=N: answer as soon as the task ends, at most N seconds):
  curl -s -H "$AUTH" -X POST $URL/task -d '{"script": "uname -a", "targets": ["$AGENT_ID"]}' \\
    | curl -s -H "$AUTH" -X POST "$URL/result?wait=10" -d @-

Agent keys: .venv/bin/python appserver.py --state-dir $STATE/master --admin-bind $ADMIN keys list

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
echo "mschedule: a tier exited; see $RUN_DIR/*.log" >&2
