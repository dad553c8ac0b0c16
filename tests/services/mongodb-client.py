"""Drives a MongoDB server with pymongo: insert, insert_many, find (two batches: find and
getMore), update, delete, aggregate and a failing command. Prints one JSON line per
command sent ({"command": ..., "status": ...}), then "done", and keeps its connection open
until its standard input closes, so that the capture can still name this process.

usage: mongodb-client.py PORT [zlib|snappy|zstd]"""
import json
import sys

import pymongo
from pymongo.errors import OperationFailure

port = int(sys.argv[1])
kw = {"compressors": sys.argv[2]} if len(sys.argv) > 2 else {}
c = pymongo.MongoClient("127.0.0.1", port, serverSelectionTimeoutMS=20000, **kw)
items = c.shop.items


def op(command, status="OK"):
    print(json.dumps({"command": command, "status": status}), flush=True)


items.insert_one({"_id": 10, "name": "x"})
op("insert")
items.insert_many([{"_id": 11}, {"_id": 12}])
op("insert")
assert len(list(items.find({"name": {"$exists": True}}, batch_size=2))) == 3
op("find")
op("getMore")
items.update_one({"_id": 10}, {"$set": {"name": "y"}})
op("update")
items.delete_one({"_id": 11})
op("delete")
assert list(items.aggregate([{"$count": "total"}])) == [{"total": 3}]
op("aggregate")
try:
    c.shop.command("boom")
    raise SystemExit("boom should fail")
except OperationFailure:
    op("boom", "Error")
print("done", flush=True)
sys.stdin.read()
