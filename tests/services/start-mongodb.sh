#!/usr/bin/env bash
# Starts the MockupDB MongoDB server (tests/services/mongodb-server.py) on a port the
# kernel picks, optionally behind its OP_COMPRESSED shim (${1}: zlib, snappy or zstd);
# prints pid=, port=, dir=. Needs pymongo and mockupdb (scripts/install-deps.sh test).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
python3 -c 'import mockupdb, pymongo' 2>/dev/null ||
  { echo "missing the Python packages mockupdb and pymongo (scripts/install-deps.sh test)" >&2; exit 3; }
DIR=$(mktemp -d /tmp/connbeat-mongodb.XXXXXX)
python3 "$(dirname "$0")/mongodb-server.py" "$DIR/port" ${1:-} </dev/null >"$DIR/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  [[ -s "$DIR/port" ]] && break
  kill -0 "$PID" 2>/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
  sleep 0.1
done
PORT=$(cat "$DIR/port")
wait_tcp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"
