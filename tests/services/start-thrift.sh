#!/usr/bin/env bash
# Starts the Calc Thrift service (tests/data/thrift/calc.thrift, code generated here with
# thrift-compiler) speaking ${1:-binary} (or compact) over ${2:-socket} (or framed) on a
# port the kernel picks; prints pid=, port=, dir= (the generated code, for the client
# tests/services/thrift-client.py).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
need thrift thrift-compiler
python3 -c 'import thrift' 2>/dev/null || { echo "python3 has no thrift module (scripts/install-deps.sh test)" >&2; exit 3; }
DIR=$(mktemp -d /tmp/connbeat-thrift.XXXXXX)
thrift --gen py -out "$DIR" "$HERE/../data/thrift/calc.thrift"
python3 -u "$HERE/thrift-server.py" "$DIR" "${1:-binary}" "${2:-socket}" >"$DIR/port" 2>"$DIR/server.log" </dev/null &
PID=$!
for _ in $(seq 1 300); do
  [[ -s "$DIR/port" ]] && break
  kill -0 "$PID" 2>/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
  sleep 0.1
done
PORT=$(head -n1 "$DIR/port")
wait_tcp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"
