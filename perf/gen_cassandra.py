#!/usr/bin/env python3
"""Writes a pcap of CQL traffic on port 9042 for perf/proto_bench.sh: connections cycling
through v4 plain, v4 lz4-compressed and v5 (segments) conversations built by
cassandra-driver's protocol classes (tests/data/cassandra/conversation.py, 20 rounds of
SELECT / PREPARE / EXECUTE / BATCH / failing QUERY each), until MIN_PACKETS.

    perf/gen_cassandra.py OUT.pcap [MIN_PACKETS]     (default 400,000)
Prints the packets, connections and transactions written."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pcapgen  # noqa: E402

ROUNDS = 20
conv = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "cassandra", "conversation.py")
variants = []
for version, compression in [("4", "none"), ("4", "lz4"), ("5", "none")]:
    out = subprocess.run([sys.executable, conv, version, compression, str(ROUNDS)],
                         check=True, capture_output=True, text=True).stdout
    variants.append([(side == "c", bytes.fromhex(h))
                     for side, h in (line.split() for line in out.splitlines())])
packets, conns = pcapgen.run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 400_000,
                             variants, 9042)
print(f"{packets} packets, {conns} connections, {conns * (5 + 5 * ROUNDS + 1)} transactions")
