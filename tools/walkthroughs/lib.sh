# Shared by the walkthroughs (`make mlserver`, `make forecaster`): show each command, then run it;
# start servers in the background on free ports; stop them and remove the work directory on any exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "$0: no .venv: run make install first" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/predcache-walkthrough.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nothing listens on now (the kernel's pick).
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The command on stdin, shown as typed ("$ " first), then run by this shell; its output is shown
# without carriage returns (curl -i's header lines) and ends with a newline.
run() {
    local command output
    command=$(cat)
    printf '\n$ %s\n' "$command"
    output=$(eval "$command")
    [ -z "$output" ] || printf '%s\n' "${output//$'\r'/}"
}

# say LINE...: commentary between the steps, one "# " line each.
say() {
    printf '\n'
    printf '# %s\n' "$@"
}

# start NAME LOG COMMAND...: run COMMAND in the background, its output in LOG; $LAST_PID is its pid.
start() {
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    printf '(%s started in the background, pid %s, log %s)\n' "$name" "$LAST_PID" "$log"
}

# stop PID: SIGTERM, then wait for it to exit.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# wait_ready NAME URL PID LOG [SECONDS]: until URL answers 200; fails with LOG's end if PID exits first.
wait_ready() {
    local name=$1 url=$2 pid=$3 log=$4 limit=${5:-60} started=$SECONDS
    until curl -sf -o /dev/null "$url"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited; the end of its log:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        if ((SECONDS - started > limit)); then
            echo "$name not ready at $url in $limit s; the end of its log:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        sleep 0.2
    done
    printf '(%s ready in %d s)\n' "$name" "$((SECONDS - started))"
}
