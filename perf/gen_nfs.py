#!/usr/bin/env python3
"""Writes a pcap of NFSv4.1 over TCP port 2049 for perf/proto_bench.sh: on long-lived
connections, COMPOUND calls (SEQUENCE, PUTFH, then READ of 4 KB, GETATTR, or READDIR) with
AUTH_UNIX credentials and their replies (a READ reply carries its 4 KB), several calls in
flight before their replies.

    perf/gen_nfs.py OUT.pcap [MIN_PACKETS]     (default 300,000)
Prints the number of packets and of transactions it wrote."""
import random
import struct
import sys

from pcapgen import Pcap, Tcp

p = Pcap(sys.argv[1])
want = int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
rng = random.Random(2049)


def u32(*v):
    return b"".join(struct.pack("!I", x) for x in v)


def opaque(b):
    return u32(len(b)) + b + b"\0" * (-len(b) % 4)


def record(body):
    return u32(0x80000000 | len(body)) + body


CRED = u32(1) + opaque(u32(12345) + opaque(b"client.example") + u32(1000, 1000, 1, 1000))
SEQ = u32(53) + b"s" * 16 + u32(1, 0, 0, 0)
PUTFH = u32(22) + opaque(b"f" * 28)
OPS = [
    ("read", u32(25) + b"\0" * 16 + u32(0, 0, 4096), 4096),
    ("getattr", u32(9) + u32(2, 0x0010011A, 0x00B0A23A), 0),
    ("readdir", u32(26) + u32(0, 0) + b"v" * 8 + u32(8192, 32768, 2, 0x18091A, 0x00B0A23A), 0),
]


def call(xid, tag, op):
    return record(u32(xid, 0, 2, 100003, 4, 1) + CRED + u32(0, 0) + opaque(tag)
                  + u32(1, 3) + SEQ + PUTFH + op)


def reply(xid, data):
    return record(u32(xid, 1, 0, 0, 0, 0, 0) + opaque(b"t") + u32(3) + u32(53, 0) + b"s" * 16
                  + u32(1, 0, 63, 63, 0) + u32(22, 0) + u32(25, 0, 0) + opaque(b"d" * data))


txns = 0
xid = 0
conn = 0
while p.packets < want:
    conn += 1
    c = Tcp(p, 0x0A000001 + conn % 50, 700 + conn % 300, 0x0A000100, 2049)
    for _ in range(200):
        batch = []
        for _ in range(rng.randint(1, 4)):
            xid += 1
            tag, op, data = rng.choice(OPS)
            batch.append((xid, data))
            c.send(0, call(xid, tag.encode(), op))
        rng.shuffle(batch)
        for x, data in batch:
            c.send(1, reply(x, data))
            txns += 1
    c.close()
p.close()
print(f"{p.packets} packets, {txns} transactions")
