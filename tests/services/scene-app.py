#!/usr/bin/python3
"""A small HTTP app for the topology scene: each GET talks to redis (PING) and to MariaDB
(reads its greeting), holds both connections HOLD seconds, and answers 200.

    scene-app.py PORT REDIS_HOST:PORT MARIADB_HOST:PORT [HOLD]
"""
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
REDIS = sys.argv[2].rsplit(":", 1)
MARIADB = sys.argv[3].rsplit(":", 1)
HOLD = float(sys.argv[4]) if len(sys.argv) > 4 else 0.6


class App(BaseHTTPRequestHandler):
    def do_GET(self):
        r = socket.create_connection((REDIS[0], int(REDIS[1])), timeout=5)
        r.sendall(b"PING\r\n")
        pong = r.recv(64)
        m = socket.create_connection((MARIADB[0], int(MARIADB[1])), timeout=5)
        greeting = m.recv(256)
        time.sleep(HOLD)
        r.close()
        m.close()
        body = b"ok %d %d\n" % (len(pong), len(greeting))
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", PORT), App).serve_forever()
