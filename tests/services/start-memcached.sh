#!/usr/bin/env bash
# Starts memcached on 127.0.0.1, TCP and UDP on one port (${1}, or a free one the kernel
# picks), protocol negotiation `auto` (text and binary); prints pid=, port=, dir=.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need memcached memcached
need memcslap libmemcached-tools
PORT=${1:-$(python3 -c '
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); break
    except OSError:
        pass
    finally:
        u.close(); t.close()
print(p)')}
DIR=$(mktemp -d /tmp/connbeat-memcached.XXXXXX)
memcached -u nobody -l 127.0.0.1 -p "$PORT" -U "$PORT" -m 16 </dev/null >"$DIR/memcached.log" 2>&1 &
PID=$!
wait_tcp "$PORT" "$PID"
wait_udp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"
