#!/usr/bin/env bash
# Starts dnsmasq on 127.0.0.1:${1:-15353} (UDP and TCP), authoritative for a few test
# names only (no upstream, no /etc/hosts); prints pid=, port=, dir=.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PORT=${1:-15353}
need dnsmasq dnsmasq-base
need dig dnsutils
DIR=$(mktemp -d /tmp/connbeat-dns.XXXXXX)
dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --conf-file=/dev/null \
  --port="$PORT" --listen-address=127.0.0.1 --bind-interfaces --user=root \
  --pid-file="$DIR/pid" --log-facility="$DIR/dnsmasq.log" \
  --address=/www.example.test/192.0.2.10 \
  --host-record=multi.example.test,192.0.2.21 \
  --host-record=multi.example.test,192.0.2.22 \
  --cname=alias.example.test,www.example.test \
  --txt-record=txt.example.test,"connbeat test" \
  --mx-host=example.test,mail.example.test,10 \
  --address=/example.test/ </dev/null >/dev/null 2>&1 &
PID=$!
wait_udp "$PORT" "$PID"
wait_tcp "$PORT" "$PID"
echo "pid=$PID port=$PORT dir=$DIR"
