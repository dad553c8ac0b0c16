#!/usr/bin/env bash
# Deep-inspection cost of this build against another connbeat binary (the build of the
# commit before a change), on the same generated capture, in one run:
#   - instructions of `connbeat -I capture -N` under callgrind (they repeat on a busy
#     machine, where wall times do not), the whole run and the engine alone;
#   - the events of both binaries (console output), which must be byte for byte the same.
#   perf/inspect_compare.sh OTHER_CONNBEAT [PACKETS]   (default 200000; needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
OTHER=$(realpath "$1")
N=${2:-200000}
W=$(mktemp -d /tmp/connbeat-compare.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 perf/gen_capture.py "$W/bench.pcap" "$N"
cargo build --release -q --bin connbeat
THIS=$(realpath "${CARGO_TARGET_DIR:-target}/release/connbeat")
cat >"$W/c.yml" <<YML
logging.level: warning
output.console: {}
connbeat.protocols:
  - {type: http, ports: [80]}
  - {type: dns, ports: [53]}
  - {type: redis, ports: [6379]}
YML
chmod 600 "$W/c.yml"

count() { # count <label> <binary>: total instructions and those under Engine::packet/finish
  valgrind --tool=callgrind --callgrind-out-file="$W/$1.cg" "$2" -c "$W/c.yml" \
    -I "$W/bench.pcap" -N >/dev/null 2>"$W/$1.err"
  local total engine
  total=$(grep -o 'Collected : [0-9]*' "$W/$1.err" | grep -o '[0-9]*$')
  engine=$(callgrind_annotate --inclusive=yes "$W/$1.cg" 2>/dev/null |
    grep -E 'Engine::(packet|finish)' | awk '{gsub(",","",$1); s+=$1} END {print s+0}')
  echo "$1 $total $engine"
}
A=$(count this "$THIS")
B=$(count other "$OTHER")
"$THIS" -c "$W/c.yml" -I "$W/bench.pcap" >"$W/this.json" 2>/dev/null
"$OTHER" -c "$W/c.yml" -I "$W/bench.pcap" >"$W/other.json" 2>/dev/null
EVENTS=$(wc -l <"$W/this.json")
if cmp -s "$W/this.json" "$W/other.json"; then SAME=yes; else SAME=NO; fi
python3 - "$A" "$B" "$EVENTS" "$SAME" <<'PY'
import sys
a, b = sys.argv[1].split(), sys.argv[2].split()
print(f"{'binary':8} {'instructions (whole -N run)':>30} {'of which the engine':>22}")
for label, tot, eng in (a, b):
    print(f"{label:8} {int(tot):>30,} {int(eng):>22,}")
print(f"this/other: whole run {int(a[1])/int(b[1]):.3f}, engine {int(a[2])/max(int(b[2]),1):.3f}")
print(f"events: {sys.argv[3]}, byte for byte the same as the other binary's: {sys.argv[4]}")
PY
