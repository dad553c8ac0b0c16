#!/usr/bin/env bash
# Starts a RabbitMQ node of its own (node name, AMQP port ${1:-a free one}, distribution
# and epmd ports free ones chosen here, data, logs and Erlang cookie in a temp dir) on
# 127.0.0.1, or on $BIND; prints pid=, port=, dir=. `kill <pid>` stops the node and its
# epmd.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need epmd erlang-base
SERVER=$(ls /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server 2>/dev/null | tail -n1 || true)
if [[ -z "$SERVER" ]]; then
  need /usr/sbin/rabbitmq-server rabbitmq-server
  SERVER=$(ls /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server | tail -n1)
fi
# Three free ports, each bound to 0 and read back by the kernel's choice.
read -r PORT DIST EPMD < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
PORT=${1:-$PORT}
DIR=$(mktemp -d /tmp/connbeat-rabbitmq.XXXXXX)
echo '[].' >"$DIR/enabled_plugins"
# The Debian wrapper would switch to the rabbitmq user and its /var/lib dir: run the
# node's own script, as the caller, with every path in the temp dir.
(
  export HOME="$DIR" ERL_EPMD_PORT="$EPMD" ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_NODENAME="connbeat$PORT@localhost" RABBITMQ_NODE_IP_ADDRESS="${BIND:-127.0.0.1}"
  export RABBITMQ_NODE_PORT="$PORT" RABBITMQ_DIST_PORT="$DIST"
  export RABBITMQ_MNESIA_BASE="$DIR/mnesia" RABBITMQ_LOG_BASE="$DIR/log"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" RABBITMQ_CONF_ENV_FILE="$DIR/env"
  export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq" RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
  export RABBITMQ_PID_FILE="$DIR/pid"
  epmd -port "$EPMD" -address 127.0.0.1 </dev/null >/dev/null 2>&1 &
  E=$!
  "$SERVER" </dev/null >"$DIR/server.log" 2>&1 &
  R=$!
  trap 'kill $R 2>/dev/null; wait $R 2>/dev/null; kill $E 2>/dev/null; wait $E 2>/dev/null; exit 0' TERM INT
  wait $R
  kill $E 2>/dev/null
) </dev/null >/dev/null 2>&1 &
PID=$!
# The AMQP port opens when the broker is ready; slow on a loaded machine.
for _ in $(seq 1 1200); do
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "rabbitmq exited before listening on $PORT: $(tail -n 20 "$DIR/server.log")" >&2
    exit 1
  fi
  if (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; then
    echo "pid=$PID port=$PORT dir=$DIR"
    exit 0
  fi
  sleep 0.1
done
kill "$PID" 2>/dev/null
echo "timed out waiting for rabbitmq on port $PORT: $(tail -n 20 "$DIR/server.log")" >&2
exit 1
