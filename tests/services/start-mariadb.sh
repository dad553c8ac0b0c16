#!/usr/bin/env bash
# Starts mariadbd on 127.0.0.1:${1:-13306} (or $BIND) with a fresh data dir (root, no password);
# prints pid=, port=, dir=.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PORT=${1:-13306}
need mariadbd mariadb-server
need mariadb mariadb-client
DIR=$(mktemp -d /tmp/connbeat-mariadb.XXXXXX)
mariadb-install-db --no-defaults --user=root --datadir="$DIR/data" \
  --auth-root-authentication-method=normal --skip-test-db >"$DIR/install.log" 2>&1
mariadbd --no-defaults --user=root --datadir="$DIR/data" --socket="$DIR/sock" \
  --pid-file="$DIR/pid" --port="$PORT" --bind-address="${BIND:-127.0.0.1}" --skip-name-resolve \
  --log-error="$DIR/error.log" --innodb-buffer-pool-size=16M </dev/null >/dev/null 2>&1 &
PID=$!
wait_tcp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"
