#!/usr/bin/env bash
# The busy host at full scale: tests/data/record_busy.sh records HTTP_REQUESTS curl
# requests (each on its own connection, client ports from a range of PORTS, so each port is
# reused about HTTP_REQUESTS/PORTS times) and REDIS_COMMANDS redis-cli commands; then
# connbeat -I and tshark decode the same file, and their HTTP status counts are compared.
#   perf/busy_bench.sh [HTTP_REQUESTS] [REDIS_COMMANDS] [PORTS]   (default 24000 8000 5000)
#   BASE_BIN=path/to/connbeat perf/busy_bench.sh ...   also the counts of another build
# Needs root (network namespace, tcpdump), tshark and /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
HTTP_N=${1:-24000}
REDIS_N=${2:-8000}
PORTS=${3:-5000}
W=$(mktemp -d /tmp/connbeat-busy.XXXXXX)
trap 'rm -rf "$W"' EXIT
cargo build --release -q --bin connbeat
tests/data/record_busy.sh "$W/busy.pcap" "$HTTP_N" "$REDIS_N" "$PORTS"
capinfos "$W/busy.pcap" | grep -E "Number of packets|Capture duration|Strict time order"
cat >"$W/c.yml" <<YML
output.file: {path: $W/out, filename: events, rotate_every_kb: 10485760, number_of_files: 2}
connbeat.protocols:
  - {type: http, ports: [18080]}
  - {type: redis, ports: [16379]}
YML
chmod 600 "$W/c.yml"

codes() { # codes <connbeat binary> <label>: HTTP codes of the events, then the counters
  rm -rf "$W/out"
  /usr/bin/time -f "%e s, peak RSS %M KiB" "$1" -c "$W/c.yml" -I "$W/busy.pcap" 2>"$W/$2.err"
  echo "== $2: $(tail -1 "$W/$2.err")"
  cat "$W/out"/events* | python3 -c '
import collections, json, sys
c = collections.Counter()
for line in sys.stdin:
    e = json.loads(line)
    if e.get("type") == "http":
        c[str(e.get("http", {}).get("response", {}).get("code", e.get("status")))] += 1
    elif e.get("type") == "redis":
        c["redis"] += 1
print("   ", dict(sorted(c.items())))'
  grep -o 'Total metrics: .*' "$W/$2.err" | tr ' ' '\n' |
    grep -E 'inspect\.(tcp\.(gaps|gap_bytes|unsorted|out_of_window|streams\.reused|streams\.opened)|transactions)' |
    tr '\n' ' '
  echo
}
codes ./target/release/connbeat connbeat
if [[ -n "${BASE_BIN:-}" ]]; then codes "$BASE_BIN" base; fi
echo "== tshark"
/usr/bin/time -f "    %e s, peak RSS %M KiB" tshark -r "$W/busy.pcap" -n -d tcp.port==18080,http \
  -Y http.response -T fields -e http.response.code | sort | uniq -c
