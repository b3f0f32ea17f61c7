#!/usr/bin/env bash
# Start master + web tier + one agent on loopback, print how to try it, stop all on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MASTER_PORT=${MSCHEDULE_MASTER_PORT:-9000}
WEB_PORT=${MSCHEDULE_WEB_PORT:-8080}
RUN_DIR=.run
mkdir -p "$RUN_DIR"
MASTER="tcp://127.0.0.1:${MASTER_PORT}"
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

"$PY" appserver.py --bind "$MASTER" --state-dir .state/master --log-dir "$RUN_DIR" & pids+=($!)
started master $! "$RUN_DIR/master.log"
"$PY" appwebserver.py --master "$MASTER" --host 127.0.0.1 --port "$WEB_PORT" --log-dir "$RUN_DIR" & pids+=($!)
started "web tier" $! "$RUN_DIR/web.log"
"$PY" app.py --master "$MASTER" --state-dir .state/agent --label env=local --log-dir "$RUN_DIR" & pids+=($!)
started agent $! "$RUN_DIR/agent.log"

URL="http://127.0.0.1:${WEB_PORT}"
AGENT_ID=$(cat .state/agent/agent_id)
cat <<MSG

mschedule is running (logs in $RUN_DIR/): master $MASTER, web $URL, one agent ($AGENT_ID).

Try it:
  curl -s $URL/task/targets
  curl -s -X POST $URL/task -d '{"script": "echo hello from \$(hostname); uptime", "targets": ["$AGENT_ID"]}'
  curl -s -X POST $URL/result -d '{"task_id": "<task_id from above>"}'

Or in one go (wait=N: answer as soon as the task ends, at most N seconds):
  curl -s -X POST $URL/task -d '{"script": "uname -a", "targets": ["$AGENT_ID"]}' \\
    | curl -s -X POST "$URL/result?wait=10" -d @-

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
echo "mschedule: a tier exited; see $RUN_DIR/*.log" >&2
