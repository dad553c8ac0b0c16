#!/usr/bin/env bash
# Starts PostgreSQL on 127.0.0.1:${1:-15432} with a fresh cluster (user postgres, trust
# auth, no TLS); prints pid=, port=, dir=.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PORT=${1:-15432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [[ -z "$BIN" ]]; then need /usr/lib/postgresql/15/bin/postgres postgresql; BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); fi
need psql postgresql-client
DIR=$(mktemp -d /tmp/connbeat-pg.XXXXXX)
chmod 755 "$DIR"
RUN=()
if [[ $(id -u) -eq 0 ]]; then
  chown postgres: "$DIR"
  RUN=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
"${RUN[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust >"$DIR/initdb.log" 2>&1
"${RUN[@]}" "$BIN/postgres" -D "$DIR/data" -p "$PORT" -k "$DIR" -c listen_addresses=127.0.0.1 \
  -c ssl=off -c fsync=off -c shared_buffers=16MB </dev/null >"$DIR/pg.log" 2>&1 &
PID=$!
wait_tcp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"
