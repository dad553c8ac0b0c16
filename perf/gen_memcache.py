#!/usr/bin/env python3
"""Writes a pcap of memcache traffic for perf/proto_bench.sh: TCP connections from 400
client ports reused many times, each with a few text commands (set with its value,
multi-key get, incr, delete) or binary ones (Set, GetK, Increment, quiet SetQ), and UDP
text requests with their replies, some spread over several datagrams.

    perf/gen_memcache.py OUT.pcap [MIN_PACKETS]     (default 300,000)
Prints the number of packets and of transactions it wrote."""
import random
import struct
import sys

from pcapgen import Pcap

out, min_packets = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
p = Pcap(out)
rng = random.Random(10)
CLI, SRV = 0x0A000001, 0x0A000002
txns = 0


def binary(magic, op, key=b"", extras=b"", value=b"", opaque=0, status=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", magic, op, len(key), len(extras), 0, status, len(body),
                       opaque, 0) + body


def text_conn():
    ex = []
    for i in range(rng.randint(2, 6)):
        k = b"key%d" % rng.randint(0, 999)
        v = b"v" * rng.randint(10, 400)
        ex.append((b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v), b"STORED\r\n"))
        ex.append((b"get %s other\r\n" % k, b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (k, len(v), v)))
        ex.append((b"incr n%d 1\r\n" % i, b"%d\r\n" % rng.randint(1, 99999)))
        ex.append((b"delete %s\r\n" % k, b"DELETED\r\n"))
    return ex


def binary_conn():
    ex = []
    for i in range(rng.randint(2, 6)):
        k = b"bkey%d" % rng.randint(0, 999)
        v = b"b" * rng.randint(10, 400)
        ex.append((binary(0x80, 0x01, k, struct.pack(">II", 0, 0), v, i),
                   binary(0x81, 0x01, opaque=i)))
        ex.append((binary(0x80, 0x0C, k, opaque=100 + i),
                   binary(0x81, 0x0C, k, struct.pack(">I", 0), v, 100 + i)))
        ex.append((binary(0x80, 0x05, k, struct.pack(">QQI", 1, 0, 0), opaque=200 + i),
                   binary(0x81, 0x05, value=struct.pack(">Q", 7), opaque=200 + i)))
        ex.append((binary(0x80, 0x11, k, struct.pack(">II", 0, 0), v, 300 + i), b""))
    return ex


conn = 0
while p.packets < min_packets:
    conn += 1
    if conn % 5 == 0:
        # UDP: a get whose value is answered in 1 to 3 datagrams.
        rid = conn & 0xFFFF
        port = 20000 + conn % 400
        n = rng.randint(1, 3)
        v = b"u" * (1300 * n - 100)
        reply = b"VALUE u 0 %d\r\n%s\r\nEND\r\n" % (len(v), v)
        p.udp(CLI, port, SRV, 11211, struct.pack(">HHHH", rid, 0, 1, 0) + b"get u\r\n")
        chunks = [reply[i:i + 1400] for i in range(0, len(reply), 1400)]
        for seq, c in enumerate(chunks):
            p.udp(SRV, 11211, CLI, port, struct.pack(">HHHH", rid, seq, len(chunks), 0) + c)
        txns += 1
        continue
    ex = text_conn() if conn % 2 else binary_conn()
    txns += len(ex)
    p.connection(CLI, SRV, 30000 + conn % 400, 11211, ex,
                 (rng.getrandbits(32), rng.getrandbits(32)))
p.close()
print(f"{p.packets} packets, {txns} transactions")
