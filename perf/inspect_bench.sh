#!/usr/bin/env bash
# Deep-inspection benchmark: a generated capture of >= 1M packets of HTTP, DNS and Redis
# (with client ports reused and packets out of time order, see gen_capture.py), decoded by
# `connbeat -I` in classic and in ECS mode (connbeat.event_format), by another connbeat
# binary (the build of an earlier commit, classic mode) and by `tshark -r` (same protocols
# to fields), all in the same run. `-N` runs build and finish every event but write none:
# the decoder and the event writer without the output.
#   perf/inspect_bench.sh [PACKETS] [OTHER_CONNBEAT]
#   (default 1000000 packets; needs tshark and /usr/bin/time; with valgrind installed, the
#   instructions of the -N runs on a 100000-packet capture too, which repeat on a busy
#   machine where wall times do not)
#   BASE_REV=<commit> perf/inspect_bench.sh [PACKETS]
#       also builds that commit (release, same target directory) and runs its engine and
#       CLI on the same file in the same run, alternating, three rounds each: ratios to it.
#   BASE_DIR=<dir> perf/inspect_bench.sh [PACKETS]
#       the same with a reference build already made (DIR/connbeat, DIR/inspect_bench).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
OTHER=${2:+$(realpath "$2")}
W=$(mktemp -d /tmp/connbeat-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 perf/gen_capture.py "$W/bench.pcap" "$N"
if [[ -n "${BASE_REV:-}" ]]; then
  mkdir -p "$W/base-src" "$W/base"
  git archive "$BASE_REV" | tar -x -C "$W/base-src"
  (cd "$W/base-src" && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release -q --bin connbeat --example inspect_bench)
  cp target/release/connbeat target/release/examples/inspect_bench "$W/base/"
elif [[ -n "${BASE_DIR:-}" ]]; then
  mkdir -p "$W/base"
  cp "$BASE_DIR/connbeat" "$BASE_DIR/inspect_bench" "$W/base/"
  BASE_REV=$BASE_DIR
fi
cargo build --release -q --bin connbeat --example inspect_bench
cat >"$W/c.yml" <<YML
logging.level: info
output.file: {path: $W/out, filename: events, rotate_every_kb: 10485760, number_of_files: 2}
connbeat.protocols:
  - {type: http, ports: [80]}
  - {type: dns, ports: [53]}
  - {type: redis, ports: [6379]}
YML
chmod 600 "$W/c.yml"
{ cat "$W/c.yml"; echo "connbeat.event_format: ecs"; } >"$W/ecs.yml"
chmod 600 "$W/ecs.yml"
PKTS=$(tshark -r "$W/bench.pcap" -T fields -e frame.number 2>/dev/null | wc -l)

measure() { # measure <label> <command...>: wall seconds and peak RSS
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >"$W/$label.out" 2>"$W/$label.err"
  read -r secs rss <"$W/time"
  echo "$label $secs $rss"
}

echo "== engine only (events built, then dropped; one thread)"
./target/release/examples/inspect_bench "$W/c.yml" "$W/bench.pcap"
echo "== label wall_s peak_rss_kb"
ROWS=()
ROWS+=("$(measure classic_N ./target/release/connbeat -c "$W/c.yml" -I "$W/bench.pcap" -N)")
ROWS+=("$(measure ecs_N ./target/release/connbeat -c "$W/ecs.yml" -I "$W/bench.pcap" -N)")
if [ -n "$OTHER" ]; then
  ROWS+=("$(measure other_classic_N "$OTHER" -c "$W/c.yml" -I "$W/bench.pcap" -N)")
fi
ROWS+=("$(measure classic_file ./target/release/connbeat -c "$W/c.yml" -I "$W/bench.pcap")")
CLASSIC_BYTES=$(du -b "$W/out" | cut -f1); rm -rf "$W/out"
ROWS+=("$(measure ecs_file ./target/release/connbeat -c "$W/ecs.yml" -I "$W/bench.pcap")")
ECS_BYTES=$(du -b "$W/out" | cut -f1); rm -rf "$W/out"
ROWS+=("$(measure tshark tshark -r "$W/bench.pcap" -n -T fields -e frame.number -e http.request.method \
  -e http.response.code -e dns.qry.name -e dns.a -e resp.bulk_string.value)")
printf '%s\n' "${ROWS[@]}"
TX=$(grep -o '[0-9]* transactions' "$W/classic_file.err" | head -1 | cut -d' ' -f1)
python3 - "$PKTS" "$TX" "$CLASSIC_BYTES" "$ECS_BYTES" "${ROWS[@]}" <<'PY'
import sys
pk, tx = int(sys.argv[1]), int(sys.argv[2])
cb, eb = int(sys.argv[3]), int(sys.argv[4])
rows = {r.split()[0]: r.split()[1:] for r in sys.argv[5:]}
t_shark = float(rows["tshark"][0])
for label, (secs, rss) in rows.items():
    s = float(secs)
    print(f"{label:16} {pk/s:>10.0f} packets/s {tx/s:>10.0f} transactions/s  {s:6.2f} s  peak RSS {int(rss)/1024:.0f} MiB  x{t_shark/s:.1f} tshark")
c, e = float(rows["classic_N"][0]), float(rows["ecs_N"][0])
print(f"ecs/classic -N wall time {e/c:.2f}; event bytes written: classic {cb}, ecs {eb} (x{eb/max(cb,1):.2f})")
if "other_classic_N" in rows:
    print(f"classic/other -N wall time {c/float(rows['other_classic_N'][0]):.2f}")
PY
if [[ -n "${BASE_REV:-}" ]]; then
  echo "== this tree against $BASE_REV, same file, alternating (engine only, then connbeat -I -N)"
  for round in 1 2 3; do
    for who in base new; do
      if [[ $who == base ]]; then bin=$W/base; else bin=./target/release; fi
      ex=$bin/inspect_bench
      [[ $who == new ]] && ex=./target/release/examples/inspect_bench
      echo "engine $who $round $("$ex" "$W/c.yml" "$W/bench.pcap")"
      r=$(measure "cli_$who" "$bin/connbeat" -c "$W/c.yml" -I "$W/bench.pcap" -N)
      echo "cli $who $round $r $(grep -o '[0-9]* transactions' "$W/cli_$who.err" | head -1)"
    done
  done | tee "$W/ab"
  python3 - "$W/ab" <<'PY'
import re, statistics, sys
eng = {"base": [], "new": []}
cli = {"base": [], "new": []}
txn = {}
for line in open(sys.argv[1]):
    w = line.split()
    if w[0] == "engine":
        eng[w[1]].append(float(re.search(r"([0-9.]+) packets/s", line).group(1)))
    elif w[0] == "cli":
        cli[w[1]].append(float(w[4]))
        txn[w[1]] = w[6]
for who in ("base", "new"):
    print(f"{who:5} engine median {statistics.median(eng[who]):>10.0f} packets/s   "
          f"connbeat -I -N median {statistics.median(cli[who]):5.2f} s   transactions {txn[who]}")
print(f"new/base: engine x{statistics.median(eng['new']) / statistics.median(eng['base']):.3f}, "
      f"CLI x{statistics.median(cli['base']) / statistics.median(cli['new']):.3f} (above 1 = faster)")
PY
fi
if command -v valgrind >/dev/null; then
  echo "== instructions of -N runs (callgrind), 100000 packets"
  python3 perf/gen_capture.py "$W/small.pcap" 100000
  count() { # count <label> <binary> <config>
    valgrind --tool=callgrind --callgrind-out-file="$W/$1.cg" "$2" -c "$3" -I "$W/small.pcap" -N \
      >/dev/null 2>"$W/$1.cgerr"
    echo "$1 $(grep -o 'Collected : [0-9]*' "$W/$1.cgerr" | grep -o '[0-9]*$')"
  }
  C=$(count classic ./target/release/connbeat "$W/c.yml"); echo "$C"
  E=$(count ecs ./target/release/connbeat "$W/ecs.yml"); echo "$E"
  O=""
  if [ -n "$OTHER" ]; then O=$(count other_classic "$OTHER" "$W/c.yml"); echo "$O"; fi
  python3 - "$C" "$E" "$O" <<'PY'
import sys
c, e = int(sys.argv[1].split()[1]), int(sys.argv[2].split()[1])
print(f"ecs/classic instructions {e/c:.3f}")
if sys.argv[3]:
    o = int(sys.argv[3].split()[1])
    print(f"classic/other instructions {c/o:.3f}")
PY
fi
echo "== memory under a flood of 300000 half-open requests (default max_streams 65536)"
python3 perf/gen_capture.py "$W/flood.pcap" 300000 --flood
measure flood ./target/release/connbeat -c "$W/c.yml" -I "$W/flood.pcap" -N
