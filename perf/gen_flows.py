#!/usr/bin/env python3
"""Writes a pcap with N distinct flows for the flows benchmark: each flow is a UDP request
and its answer between one of 65,536 clients (10.x.y.z, ephemeral ports) and one of 16
servers on port 40000 (a port no protocol claims), with increasing timestamps, 20,000 new
flows per second of capture time (so that about that many times `timeout` flows are alive
at once).

    perf/gen_flows.py OUT.pcap [FLOWS]     (default 1,000,000)
Prints the number of flows and packets it wrote."""
import struct
import sys

out_path = sys.argv[1]
flows = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
f = open(out_path, "wb", buffering=1 << 22)
f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
ETH_C = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
ETH_S = b"\x00\x00\x00\x00\x00\x01" + b"\x00\x00\x00\x00\x00\x02" + b"\x08\x00"
PAYLOAD = b"q" * 32
ts = 1_795_000_000 * 1_000_000
packets = 0


def frame(eth, src, dst, sport, dport):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(PAYLOAD), 0) + PAYLOAD
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     struct.pack("!I", src), struct.pack("!I", dst))
    return eth + ip + udp


for i in range(flows):
    client = 0x0A000000 | (i & 0xFFFF)
    server = 0xC0A80000 | (i % 16)
    sport = 1024 + (i >> 16) * 17 % 60000
    for fr in (frame(ETH_C, client, server, sport, 40000),
               frame(ETH_S, server, client, 40000, sport)):
        ts += 25
        f.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(fr), len(fr)))
        f.write(fr)
        packets += 1
f.close()
print(f"{flows} flows, {packets} packets")
