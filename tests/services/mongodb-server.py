"""A scriptable MongoDB server for tests: MockupDB (MongoDB's own wire-protocol test
server) answering find, getMore, insert, update, delete and aggregate, and failing the
command `boom` with ok: 0. With a compressor name (zlib, snappy, zstd), clients talk to a
small shim in front of MockupDB, which speaks OP_COMPRESSED with pymongo's own
compressors (MockupDB does not): it decompresses requests and compresses the replies to
compressed requests. Writes the port clients use to PORTFILE, then serves until killed.

usage: mongodb-server.py PORTFILE [zlib|snappy|zstd]
The client port is the kernel's choice, or $MONGO_PORT when set (recordings)."""
import os
import socket
import struct
import sys
import threading

from mockupdb import MockupDB
from pymongo import compression_support as cs

portfile = sys.argv[1]
compressor = sys.argv[2] if len(sys.argv) > 2 else None
IDS = {"snappy": 1, "zlib": 2, "zstd": 3}

hello = {"maxWireVersion": 17, "minWireVersion": 0}
if compressor:
    hello["compression"] = [compressor]
fixed = int(os.environ.get("MONGO_PORT", "0"))
server = MockupDB(auto_ismaster=hello, port=None if compressor else (fixed or None))
server.run()


def read_message(sock):
    head = b""
    while len(head) < 16:
        chunk = sock.recv(16 - len(head))
        if not chunk:
            return None
        head += chunk
    length = struct.unpack("<i", head[:4])[0]
    body = b""
    while len(body) < length - 16:
        chunk = sock.recv(length - 16 - len(body))
        if not chunk:
            return None
        body += chunk
    return head, body


def shim(client):
    """One client connection: decompress its requests, compress the replies to them."""
    upstream = socket.create_connection(("127.0.0.1", server.port))
    compressed_ids = set()

    def to_server():
        while (m := read_message(client)) is not None:
            head, body = m
            length, rid, rto, op = struct.unpack("<iiii", head)
            if op == 2012:
                orig, _size, cid = struct.unpack("<iiB", body[:9])
                body = cs.decompress(body[9:], cid, 48_000_000)
                head = struct.pack("<iiii", 16 + len(body), rid, rto, orig)
                compressed_ids.add(rid)
            upstream.sendall(head + body)
        upstream.close()

    def to_client():
        while (m := read_message(upstream)) is not None:
            head, body = m
            length, rid, rto, op = struct.unpack("<iiii", head)
            if rto in compressed_ids:
                ctx = {1: cs.SnappyContext, 2: cs.ZlibContext, 3: cs.ZstdContext}[IDS[compressor]]
                ctx = ctx(-1) if ctx is cs.ZlibContext else ctx
                data = ctx.compress(body)
                body = struct.pack("<iiB", op, len(body), IDS[compressor]) + data
                head = struct.pack("<iiii", 16 + len(body), rid, rto, 2012)
            client.sendall(head + body)
        client.close()

    threading.Thread(target=to_server, daemon=True).start()
    threading.Thread(target=to_client, daemon=True).start()


port = server.port
if compressor:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", fixed))
    listener.listen(16)
    port = listener.getsockname()[1]

    def accept():
        while True:
            c, _ = listener.accept()
            shim(c)

    threading.Thread(target=accept, daemon=True).start()

with open(portfile + ".tmp", "w") as f:
    f.write(str(port))
os.rename(portfile + ".tmp", portfile)

DOCS = [{"_id": i, "name": "n%d" % i} for i in range(3)]
while True:
    r = server.receives(timeout=24 * 3600)
    name = r.command_name
    if name == "find":
        r.reply({"cursor": {"id": 42, "firstBatch": DOCS[:2], "ns": "shop.items"}, "ok": 1})
    elif name == "getMore":
        r.reply({"cursor": {"id": 0, "nextBatch": DOCS[2:], "ns": "shop.items"}, "ok": 1})
    elif name == "insert":
        r.reply({"n": len(r.docs[0].get("documents", [])) or 1, "ok": 1})
    elif name in ("update", "delete"):
        r.reply({"n": 1, "nModified": 1, "ok": 1})
    elif name == "aggregate":
        r.reply({"cursor": {"id": 0, "firstBatch": [{"total": 3}], "ns": "shop.items"}, "ok": 1})
    elif name == "boom":
        r.reply({"ok": 0, "errmsg": "boom failed", "code": 59})
    else:
        r.reply({"ok": 1})
