#!/usr/bin/env bash
# Records the capture of a busy host, as users see it: real curl requests to a real Python
# http.server (HTTP/1.0: every request on its own connection, one in five a 404) and real
# redis-cli commands (one connection per invocation, some invocations repeating a command
# on one connection) against a real redis-server, all on loopback while tcpdump records.
# Everything runs in a network namespace of its own whose ephemeral port range is narrowed
# to PORTS ports (the host's settings are not touched), so client ports are reused many
# times, as on a busy host. Needs root (namespace, tcpdump).
#   tests/data/record_busy.sh OUT.pcap [HTTP_REQUESTS] [REDIS_COMMANDS] [PORTS]
#   (defaults 3000, 1000, 1000). Prints "http=N redis=M" (what was sent) on success.
# A port is free again for the same server once the server's TIME_WAIT lets a new SYN in:
# about HTTP_REQUESTS / 4 ports keep every request answered.
set -euo pipefail
OUT=$1
HTTP_N=${2:-3000}
REDIS_N=${3:-1000}
PORTS=${4:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
SVC="$HERE/../services"
if [[ -z "${CONNBEAT_BUSY_NETNS:-}" ]]; then
  exec unshare --net env CONNBEAT_BUSY_NETNS=1 "$0" "$@"
fi
. "$SVC/lib.sh"
need tcpdump tcpdump
need curl curl
need python3 python3
ip link set lo up
# Per network namespace: only this namespace's connections draw from the narrow range.
echo "40000 $((40000 + PORTS - 1))" >/proc/sys/net/ipv4/ip_local_port_range

PIDS=()
DIRS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for d in "${DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

line=$("$SVC/start-redis.sh" 16379)
PIDS+=("$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' <<<"$line")")
DIRS+=("$(sed -n 's/.*dir=\([^ ]*\).*/\1/p' <<<"$line")")

WWW=$(mktemp -d /tmp/connbeat-www.XXXXXX)
DIRS+=("$WWW")
for i in $(seq 0 9); do head -c $((200 + i * 300)) /dev/zero | tr '\0' 'x' >"$WWW/f$i.html"; done
python3 -m http.server 18080 --bind 127.0.0.1 --directory "$WWW" >/dev/null 2>&1 &
PIDS+=($!)
wait_tcp 18080 "${PIDS[-1]}"

ERR=$(mktemp)
DIRS+=("$ERR" "$ERR.curl")
# Port 18099 carries only the end marker (below); nothing listens there.
tcpdump -i lo -s 0 -B 32768 -U -w "$OUT" "tcp port 18080 or tcp port 16379 or tcp port 18099" 2>"$ERR" &
TCPDUMP=$!
PIDS+=("$TCPDUMP")
for _ in $(seq 1 200); do grep -q "listening on" "$ERR" && break; sleep 0.05; done

# HTTP: 4 curl processes at once, each with a list of URLs (the server closes after every
# response, so each URL is a connection of its own); request i is a 404 when i % 5 == 0.
urls() { # urls <worker>: the URLs of one worker
  for ((i = $1; i < HTTP_N; i += 4)); do
    if ((i % 5 == 0)); then echo "url = \"http://127.0.0.1:18080/missing/$i\""; else
      echo "url = \"http://127.0.0.1:18080/f$((i % 10)).html?i=$i\""; fi
    echo "output = \"/dev/null\""
  done
}
CURLS=()
for w in 0 1 2 3; do
  urls "$w" | curl -sS -K - 2>>"$ERR.curl" &
  CURLS+=($!)
done
# Redis meanwhile: some commands one connection each (redis-cli closes first, so each
# leaves its port in TIME_WAIT: at most PORTS/2 of them), the rest repeated on two.
single=$((REDIS_N / 2 < PORTS / 2 ? REDIS_N / 2 : PORTS / 2))
for ((i = 0; i < single; i++)); do redis-cli -p 16379 SET "k$i" "$i" >/dev/null; done
rest=$((REDIS_N - single))
redis-cli -p 16379 -r "$((rest / 2))" INCR counter >/dev/null
redis-cli -p 16379 -r "$((rest - rest / 2))" GET counter >/dev/null
failed=0
for p in "${CURLS[@]}"; do wait "$p" || failed=1; done
if ((failed)); then
  echo "curl failed: $(sort "$ERR.curl" | uniq -c | head -3)" >&2
  exit 5
fi

# Every connection is closed by now. tcpdump may still be behind the kernel's buffer, and
# what it has not read when it stops is lost without being counted as dropped: knock once
# on the marker port (a SYN and its RST, after every packet of the traffic) and stop only
# once the marker is in the file.
(exec 3<>/dev/tcp/127.0.0.1/18099) 2>/dev/null || true
for _ in $(seq 1 600); do
  tcpdump -r "$OUT" -c 1 "tcp port 18099" 2>/dev/null | grep -q . && break
  sleep 0.05
done
kill -INT "$TCPDUMP"
wait "$TCPDUMP" 2>/dev/null || true
if grep -q "[1-9][0-9]* packets dropped by kernel" "$ERR"; then
  echo "tcpdump dropped packets: $(cat "$ERR")" >&2
  exit 4
fi
echo "http=$HTTP_N redis=$REDIS_N"
