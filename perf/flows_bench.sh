#!/usr/bin/env bash
# Flows over a capture with a million flows (perf/gen_flows.py), in one run:
#   - connbeat -I -N without flows (a protocol on a port the capture does not use): the
#     decode path alone, the "no flows" figure;
#   - with flows bounded by max_flows (100,000, the default) and timeout 10s: about 200,000
#     flows are alive at once in the capture's time, so the bound is reached, flows idle
#     for the timeout are ended early to make room, and the rest are counted as dropped;
#   - with flows unbounded (max_flows 2,000,000), to show what the bound saves;
#   - tshark's UDP conversation table (-z conv,udp) on the same capture, the reference.
# Prints packets per CPU second (user + system: the machine may be shared, wall time would
# measure the others' load), peak RSS, flow events and drops of each, and the ratios.
#   perf/flows_bench.sh [FLOWS]        (default 1000000; the capture is deleted at the end)
# BIN=path/to/connbeat uses that build instead of building the release one.
# MAX_FLOWS=N bounds the bounded run (default 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${1:-1000000}
W=$(mktemp -d /tmp/connbeat-flows-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
if [[ -z "${BIN:-}" ]]; then
  cargo build --release -q --bin connbeat
  BIN=./target/release/connbeat
fi
python3 perf/gen_flows.py "$W/flows.pcap" "$FLOWS" >"$W/gen.txt"
PKTS=$((FLOWS * 2))
config() { # config <name> <flows yaml or empty>
  cat >"$W/$1.yml" <<YML
logging.level: info
connbeat.event_format: ecs
output.console: {enabled: true}
connbeat.protocols: [{type: dns, ports: [53]}]
$2
YML
  chmod 600 "$W/$1.yml"
}
config noflows ""
config bounded "connbeat.flows: {timeout: 10s, period: -1s, max_flows: ${MAX_FLOWS:-100000}}"
config unbounded "connbeat.flows: {timeout: 10s, period: -1s, max_flows: 2000000}"
measure() { # measure <label> <command...>: label, CPU seconds (user+sys), peak RSS KiB
  local label=$1; shift
  /usr/bin/time -f "%U %S %M" -o "$W/time" "$@" >/dev/null 2>"$W/$label.err"
  read -r user sys rss <"$W/time"
  local secs
  secs=$(python3 -c "print($user + $sys)")
  local pub drop
  pub=$(grep -o 'inspect.flows.published=[0-9]*' "$W/$label.err" | cut -d= -f2 || true)
  drop=$(grep -o 'inspect.flows.dropped=[0-9]*' "$W/$label.err" | cut -d= -f2 || true)
  echo "$label $secs $rss ${pub:-0} ${drop:-0}"
}
ROWS=(
  "$(measure no_flows "$BIN" -c "$W/noflows.yml" -I "$W/flows.pcap" -N)"
  "$(measure flows_bounded "$BIN" -c "$W/bounded.yml" -I "$W/flows.pcap" -N)"
  "$(measure flows_unbounded "$BIN" -c "$W/unbounded.yml" -I "$W/flows.pcap" -N)"
  "$(measure tshark_conv tshark -n -q -r "$W/flows.pcap" -z conv,udp)"
)
python3 - "$PKTS" "$(cat "$W/gen.txt")" "${ROWS[@]}" <<'PY'
import sys
pk = int(sys.argv[1])
print(f"capture: {sys.argv[2]}")
rows = {r.split()[0]: r.split()[1:] for r in sys.argv[3:]}
base = max(float(rows["no_flows"][0]), 0.01)
shark = max(float(rows["tshark_conv"][0]), 0.01)
for label, (secs, rss, pub, drop) in rows.items():
    s = max(float(secs), 0.01)
    extra = "" if label.startswith("tshark") else f"  flow events {pub:>8}  dropped packets {drop:>8}"
    print(f"{label:16} {pk/s:>10.0f} packets/CPU-s  {s:6.2f} CPU-s  peak RSS {int(rss)/1024:6.0f} MiB"
          f"  x{base/s:.2f} of no-flows  x{shark/s:.1f} tshark{extra}")
PY
