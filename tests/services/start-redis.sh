#!/usr/bin/env bash
# Starts redis-server on 127.0.0.1:${1:-16379} (or $BIND, e.g. 0.0.0.0 inside a test's
# network namespace) in a temp dir, or in $REDIS_DIR (kept, so that a restart finds its
# append-only file); prints pid=, port=, dir=. $APPENDONLY=yes turns on the append-only
# file with appendfsync always (nothing acknowledged is lost to a kill). Arguments after
# the port go to redis-server as they are (e.g. --port 0 --tls-port P ... for TLS only;
# the port waited for is then the TLS one given as $WAIT_PORT).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PORT=${1:-16379}
shift || true
need redis-server redis-server
need redis-cli redis-tools
DIR=${REDIS_DIR:-$(mktemp -d /tmp/connbeat-redis.XXXXXX)}
mkdir -p "$DIR"
AOF=(--appendonly no)
if [[ "${APPENDONLY:-no}" == yes ]]; then
  AOF=(--appendonly yes --appendfsync always)
fi
redis-server --port "$PORT" --bind "${BIND:-127.0.0.1}" --protected-mode no --save '' "${AOF[@]}" --dir "$DIR" \
  --logfile "$DIR/redis.log" --daemonize no "$@" </dev/null >/dev/null 2>&1 &
PID=$!
wait_tcp "${WAIT_PORT:-$PORT}" "$PID"
echo "pid=$PID port=${WAIT_PORT:-$PORT} dir=$DIR"
