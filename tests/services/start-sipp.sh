#!/usr/bin/env bash
# Starts sipp's built-in UAS (answers INVITEs) on 127.0.0.1 over ${1:-u1} (u1: UDP, t1:
# TCP) in a temp dir; prints pid=, port=, dir=. Make calls to it with sipp-call.sh.
# sipp cannot bind port 0: its ports are chosen by the kernel just before (free-ports.py),
# and chosen again when one was taken in between.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need sipp sip-tester
T=${1:-u1}
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR=$(mktemp -d /tmp/connbeat-sipp.XXXXXX)
cd "$DIR"
PID=
for _ in 1 2 3 4 5; do
  read -r PORT MEDIA CONTROL < <(python3 "$HERE/free-ports.py" 3)
  sipp -sn uas -t "$T" -i 127.0.0.1 -p "$PORT" -mp "$MEDIA" -cp "$CONTROL" -bg >"$DIR/uas.log" 2>&1 || true
  PID=$(sed -n 's/.*PID=\[\([0-9]*\)\].*/\1/p' "$DIR/uas.log")
  for _ in $(seq 1 100); do
    if [[ -n "$PID" ]] && ss -Hln "sport = :$PORT" 2>/dev/null | grep -q .; then
      echo "pid=$PID port=$PORT dir=$DIR"
      exit 0
    fi
    if [[ -z "$PID" ]] || ! kill -0 "$PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null || true
done
echo "sipp did not start: $(cat "$DIR"/*.log 2>/dev/null | tail -n 5)" >&2
exit 1
