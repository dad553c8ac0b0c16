#!/usr/bin/env bash
# One protocol's decoder against tshark, on the same capture, in the same run.
#   perf/proto_bench.sh PROTO PORTS PCAP TSHARK_FILTER [TSHARK_FIELD ...]
#     PROTO           the connbeat protocol type (its registry name), e.g. memcache
#     PORTS           its ports as a YAML list, e.g. '[11211]'
#     PCAP            the capture (made by the protocol's perf/gen_<proto>.py)
#     TSHARK_FILTER   tshark's display filter for the protocol's messages, e.g. memcache
#     TSHARK_FIELD    fields tshark prints per message (its decoding work), e.g. memcache.command
# Extra connbeat settings for the protocol entry can be given in PROTO_OPTS (YAML flow
# mapping items, e.g. 'protocol_type: compact'), and tshark's decode-as in TSHARK_ARGS
# (e.g. '-d tcp.port==9090,thrift').
# Prints packets/s and transactions/s of `connbeat -I -N` (events built, not written) and of
# `connbeat -I` writing ECS events to a file, tshark's rate, and the ratios: of wall-clock
# time, and of CPU time (user + system), which other load on the machine disturbs less.
# REPEAT=n runs each command n times (alternating) and keeps each one's fastest run.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTO=$1 PORTS=$2 PCAP=$(realpath "$3") FILTER=$4
shift 4
W=$(mktemp -d /tmp/connbeat-proto-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
cargo build --release -q --bin connbeat
cat >"$W/c.yml" <<YML
logging.level: info
connbeat.event_format: ecs
output.file: {path: $W/out, filename: events, rotate_every_kb: 10485760, number_of_files: 2}
connbeat.protocols:
  - {type: $PROTO, ports: $PORTS${PROTO_OPTS:+, $PROTO_OPTS}}
YML
chmod 600 "$W/c.yml"
PKTS=$(tshark -r "$PCAP" -T fields -e frame.number 2>/dev/null | wc -l)
measure() { # measure <label> <command...>: wall seconds, peak RSS, CPU seconds
  local label=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$W/time" "$@" >"$W/$label.out" 2>"$W/$label.err"
  read -r secs rss user sys <"$W/time"
  echo "$label $secs $rss $(awk "BEGIN{print $user + $sys}")"
}
FIELDS=()
for f in "$@"; do FIELDS+=(-e "$f"); done
# shellcheck disable=SC2086
ROWS=()
for _ in $(seq "${REPEAT:-1}"); do
  ROWS+=(
    "$(measure connbeat_N ./target/release/connbeat -c "$W/c.yml" -I "$PCAP" -N)"
    "$(measure connbeat_file ./target/release/connbeat -c "$W/c.yml" -I "$PCAP")"
    "$(measure tshark tshark -r "$PCAP" -n ${TSHARK_ARGS:-} -Y "$FILTER" -T fields -e frame.number "${FIELDS[@]}")"
  )
done
TX=$(grep -o '[0-9]* transactions' "$W/connbeat_file.err" | head -1 | cut -d' ' -f1)
MSGS=$(wc -l <"$W/tshark.out")
python3 - "$PROTO" "$PKTS" "${TX:-0}" "$MSGS" "${ROWS[@]}" <<'PY'
import sys
proto, pk, tx, msgs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = {}
for r in sys.argv[5:]:  # each command's fastest run (wall), and its least CPU
    label, secs, rss, cpu = r.split()
    best = rows.get(label, (float("inf"), 0, float("inf")))
    rows[label] = (min(best[0], float(secs)), max(best[1], int(rss)), min(best[2], float(cpu)))
t_shark, _, c_shark = rows["tshark"]
print(f"{proto}: {pk} packets, connbeat {tx} transactions, tshark {msgs} {proto} messages")
for label, (secs, rss, cpu) in rows.items():
    s, c = max(secs, 0.01), max(cpu, 0.01)
    print(f"{label:14} {pk/s:>10.0f} packets/s {tx/s:>10.0f} transactions/s  {s:6.2f} s  "
          f"peak RSS {rss/1024:.0f} MiB  x{t_shark/s:.1f} tshark  "
          f"CPU {c:6.2f} s  x{c_shark/c:.1f} tshark")
PY
