#!/usr/bin/env python3
"""Writes a pcap of MongoDB traffic for perf/proto_bench.sh: TCP connections from 400
client ports reused many times, each with a few OP_MSG commands and their replies (find
with a batch of documents, insert with a document sequence, update, a failing command),
some legacy OP_QUERY/OP_REPLY pairs, and one connection in ten zlib-compressed
(OP_COMPRESSED). Needs pymongo (its bson module).

    perf/gen_mongodb.py OUT.pcap [MIN_PACKETS]     (default 300,000)
Prints the number of packets and of transactions it wrote."""
import random
import struct
import sys
import zlib

import bson

from pcapgen import Pcap

out, min_packets = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
p = Pcap(out)
rng = random.Random(27)
CLI, SRV = 0x0A000001, 0x0A000003
txns = 0
rid = 0


def message(op, body, response_to=0):
    global rid
    rid += 1
    return struct.pack("<iiii", 16 + len(body), rid, response_to, op) + body, rid


def op_msg(doc, seq=None, response_to=0):
    body = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
    if seq:
        name, docs = seq
        payload = name.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        body += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
    return message(2013, body, response_to)


def compress(msg):
    length, r, to, op = struct.unpack("<iiii", msg[:16])
    data = zlib.compress(msg[16:])
    body = struct.pack("<iiB", op, length - 16, 2) + data
    return struct.pack("<iiii", 16 + len(body), r, to, 2012) + body


def exchanges(compressed):
    ex = []
    for _ in range(rng.randint(2, 5)):
        kind = rng.randint(0, 4)
        docs = [{"_id": rng.getrandbits(30), "name": "n%d" % i, "qty": i} for i in range(rng.randint(1, 8))]
        if kind == 0:
            req, r = op_msg({"find": "items", "filter": {"qty": {"$gt": 1}}, "$db": "shop"})
            resp, _ = op_msg({"cursor": {"id": 0, "firstBatch": docs, "ns": "shop.items"}, "ok": 1.0}, response_to=r)
        elif kind == 1:
            req, r = op_msg({"insert": "items", "$db": "shop"}, ("documents", docs))
            resp, _ = op_msg({"n": len(docs), "ok": 1.0}, response_to=r)
        elif kind == 2:
            req, r = op_msg({"update": "items", "updates": [{"q": {"_id": 1}, "u": {"$set": {"a": 1}}}], "$db": "shop"})
            resp, _ = op_msg({"n": 1, "nModified": 1, "ok": 1.0}, response_to=r)
        elif kind == 3:
            req, r = op_msg({"boom": 1, "$db": "shop"})
            resp, _ = op_msg({"ok": 0.0, "errmsg": "no such command", "code": 59}, response_to=r)
        else:
            q = struct.pack("<i", 0) + b"shop.items\x00" + struct.pack("<ii", 0, 10) + bson.encode({"qty": 2})
            req, r = message(2004, q)
            rep = struct.pack("<iqii", 0, 0, 0, len(docs)) + b"".join(bson.encode(d) for d in docs)
            resp, _ = message(1, rep, r)
        if compressed:
            req, resp = compress(req), compress(resp)
        ex.append((req, resp))
    return ex


conn = 0
while p.packets < min_packets:
    conn += 1
    ex = exchanges(conn % 10 == 0)
    txns += len(ex)
    p.connection(CLI, SRV, 30000 + conn % 400, 27017, ex, (rng.getrandbits(32), rng.getrandbits(32)))
p.close()
print(f"{p.packets} packets, {txns} transactions")
