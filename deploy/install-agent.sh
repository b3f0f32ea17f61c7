#!/bin/sh
# Install (or upgrade) the mschedule agent on this host, as root, in one command:
#
#   sh install-agent.sh --master tcp://MASTER:9000 --master-key KEY [--label k=v ...] mschedule-VERSION.whl
#
# It makes a virtualenv in --prefix (/opt/mschedule), installs the wheel into it (dependencies from PyPI, or
# only from --find-links DIR, a wheelhouse made by `make wheelhouse`, for hosts without internet), writes
# /etc/mschedule/{master.key,agent.env,agent.toml} the first time (an upgrade keeps what is there), installs
# the systemd unit and starts the agent. Run again with a newer wheel to upgrade; the agent is restarted.
# --no-systemd stops after the install (for a test, or a host without systemd).
set -eu

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "$0"
    echo "options: --master URL --master-key KEY_OR_FILE --label K=V (repeatable) --find-links DIR"
    echo "         --prefix DIR (/opt/mschedule) --etc DIR (/etc/mschedule) --python PYTHON (python3) --no-systemd"
}

fail() { echo "install-agent.sh: $*" >&2; exit 2; }

prefix=/opt/mschedule
etc=/etc/mschedule
python=python3
systemd=1
master=
key=
links=
wheel=
labels=
while [ $# -gt 0 ]; do
    case "$1" in
        --master) [ $# -ge 2 ] || fail "$1 needs a value"; master=$2; shift 2 ;;
        --master-key) [ $# -ge 2 ] || fail "$1 needs a value"; key=$2; shift 2 ;;
        --label)
            [ $# -ge 2 ] || fail "$1 needs a value"
            case "$2" in *=*) ;; *) fail "--label $2: expected key=value" ;; esac
            labels="$labels
$2"
            shift 2 ;;
        --find-links) [ $# -ge 2 ] || fail "$1 needs a value"; links=$2; shift 2 ;;
        --prefix) [ $# -ge 2 ] || fail "$1 needs a value"; prefix=$2; shift 2 ;;
        --etc) [ $# -ge 2 ] || fail "$1 needs a value"; etc=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || fail "$1 needs a value"; python=$2; shift 2 ;;
        --no-systemd) systemd=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) fail "unknown option $1 (--help)" ;;
        *) [ -z "$wheel" ] || fail "one wheel only"; wheel=$1; shift ;;
    esac
done
[ -n "$wheel" ] || fail "which wheel? (--help)"
[ -f "$wheel" ] || fail "$wheel: no such file"

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "$python: Python 3.11 or newer needed"
[ -x "$prefix/bin/pip" ] || "$python" -m venv "$prefix"
if [ -n "$links" ]; then
    "$prefix/bin/pip" install --quiet --disable-pip-version-check --upgrade --no-index --find-links "$links" "$wheel"
else
    "$prefix/bin/pip" install --quiet --disable-pip-version-check --upgrade "$wheel"
fi
echo "installed: $("$prefix/bin/mschedule-agent" --version)"

mkdir -p "$etc"
if [ ! -e "$etc/agent.env" ]; then
    [ -n "$master" ] || fail "--master is needed for a first install"
    [ -n "$key" ] || fail "--master-key is needed for a first install"
    if [ -f "$key" ]; then
        cp "$key" "$etc/master.key"
    else
        printf '%s\n' "$key" > "$etc/master.key"
    fi
    chmod 0644 "$etc/master.key"
    umask 077
    {
        echo "# written by install-agent.sh; flags of mschedule-agent as MSCHEDULE_* variables (--help)"
        echo "MSCHEDULE_MASTER=$master"
        echo "MSCHEDULE_MASTER_KEY=$etc/master.key"
        echo "MSCHEDULE_STATE_DIR=/var/lib/mschedule-agent"
        [ -z "$labels" ] || echo "MSCHEDULE_CONFIG=$etc/agent.toml"
    } > "$etc/agent.env"
    if [ -n "$labels" ]; then
        {
            echo "[labels]"
            echo "$labels" | while IFS='=' read -r k v; do
                [ -z "$k" ] || printf '%s = "%s"\n' "$k" "$v"
            done
        } > "$etc/agent.toml"
    fi
    echo "wrote $etc/agent.env"
else
    echo "kept $etc/agent.env (an upgrade does not touch it)"
fi

[ "$systemd" = 1 ] || exit 0
command -v systemctl >/dev/null 2>&1 || fail "no systemctl: run $prefix/bin/mschedule-agent yourself, or pass --no-systemd"
unit="$prefix/share/mschedule/systemd/mschedule-agent.service"
[ -f "$unit" ] || fail "$unit missing from the wheel"
sed "s|/opt/mschedule/|$prefix/|g; s|/etc/mschedule/|$etc/|g" "$unit" > /etc/systemd/system/mschedule-agent.service
systemctl daemon-reload
systemctl enable --quiet mschedule-agent
systemctl restart mschedule-agent
echo "mschedule-agent started; accept its key on the master (mschedule keys list)"
