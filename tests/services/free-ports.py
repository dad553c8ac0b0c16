"""Prints N ports free for both UDP and TCP on 127.0.0.1, chosen by the kernel (bound to
0 and read back), for tools that cannot bind port 0 themselves and print what they got
(sipp). Every socket stays bound until all are chosen, so the ports are distinct."""

import socket
import sys

held = []
ports = []
while len(ports) < int(sys.argv[1]):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", port))
    except OSError:
        u.close()
        continue
    held += [u, t]
    ports.append(port)
print(" ".join(map(str, ports)))
