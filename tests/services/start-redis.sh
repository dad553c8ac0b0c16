#!/usr/bin/env bash
# Starts redis-server on 127.0.0.1:${1:-16379} (or $BIND, e.g. 0.0.0.0 inside a test's
# network namespace) in a temp dir; prints pid=, port=, dir=.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PORT=${1:-16379}
need redis-server redis-server
need redis-cli redis-tools
DIR=$(mktemp -d /tmp/connbeat-redis.XXXXXX)
redis-server --port "$PORT" --bind "${BIND:-127.0.0.1}" --protected-mode no --save '' --appendonly no --dir "$DIR" \
  --logfile "$DIR/redis.log" --daemonize no </dev/null >/dev/null 2>&1 &
PID=$!
wait_tcp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"
