#!/usr/bin/env bash
# Starts osmem-server (PyPI osmem-server: an in-memory OpenSearch-compatible server) on
# 127.0.0.1:${1:-0} (0: a port the system picks, read back from its first line); prints
# pid=, port=, dir=. Its binary comes with the Python package of the python3 on PATH.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
BIN=$(python3 -c 'import osmem_server; print(osmem_server.resolve_binary())' 2>/dev/null) || {
  echo "osmem-server is not installed (scripts/install-deps.sh test)" >&2
  exit 3
}
DIR=$(mktemp -d /tmp/connbeat-osmem.XXXXXX)
"$BIN" -addr "127.0.0.1:${1:-0}" -no-stdin-watch </dev/null >"$DIR/out" 2>"$DIR/log" &
PID=$!
for _ in $(seq 1 300); do
  if ! kill -0 "$PID" 2>/dev/null; then echo "osmem-server exited: $(cat "$DIR/log")" >&2; exit 1; fi
  PORT=$(grep -o '"url":"http://127.0.0.1:[0-9]*' "$DIR/out" | grep -o '[0-9]*$' || true)
  [[ -n "$PORT" ]] && break
  sleep 0.1
done
[[ -n "${PORT:-}" ]] || { echo "osmem-server did not say its address" >&2; exit 1; }
wait_tcp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"
