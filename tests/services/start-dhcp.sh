#!/usr/bin/env bash
# Starts dnsmasq as a DHCPv4 server (no DNS) inside network namespace $1 on interface $2,
# leasing $3..$4 for 2 minutes; prints pid=, port=, dir=.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
NS=$1 IF=$2 FROM=$3 TO=$4
need dnsmasq dnsmasq-base
need busybox busybox-static
DIR=$(mktemp -d /tmp/connbeat-dhcp.XXXXXX)
ip netns exec "$NS" dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll \
  --conf-file=/dev/null --port=0 --interface="$IF" --bind-interfaces --user=root \
  --dhcp-range="$FROM,$TO,255.255.255.0,2m" --dhcp-leasefile="$DIR/leases" --no-ping \
  --dhcp-authoritative --pid-file="$DIR/pid" --log-facility="$DIR/dnsmasq.log" \
  </dev/null >/dev/null 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  if ! kill -0 "$PID" 2>/dev/null; then echo "dnsmasq exited: $(cat "$DIR/dnsmasq.log" 2>/dev/null)" >&2; exit 1; fi
  if ip netns exec "$NS" ss -Hlun 'sport = :67' 2>/dev/null | grep -q .; then
    echo "pid=$PID port=67 dir=$DIR"
    exit 0
  fi
  sleep 0.1
done
echo "timed out waiting for dnsmasq on port 67" >&2
exit 1
