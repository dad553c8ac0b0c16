#!/usr/bin/env python3
"""Writes a pcap of SMTP sessions on port 25 for perf/proto_bench.sh: each session has a
greeting, EHLO with extensions, three messages (MAIL FROM, two RCPT TO, DATA with a 2 to
20 KB body) and QUIT; one recipient in ten is refused.

    perf/gen_smtp.py OUT.pcap [MIN_PACKETS]     (default 300,000)
Prints the number of packets and of transactions it wrote."""
import random
import sys

from pcapgen import Pcap, Tcp

p = Pcap(sys.argv[1])
want = int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
rng = random.Random(25)
txns = 0
n = 0
while p.packets < want:
    n += 1
    c = Tcp(p, 0x0A000001 + n % 200, 10000 + n % 50000, 0x0A000100, 25)
    c.send(1, b"220 mx.example ESMTP\r\n")
    c.send(0, b"EHLO client%d.example\r\n" % n)
    c.send(1, b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
    for m in range(3):
        c.send(0, b"MAIL FROM:<user%d@client.example> SIZE=2000\r\n" % m)
        c.send(1, b"250 2.1.0 Ok\r\n")
        for r in range(2):
            c.send(0, b"RCPT TO:<rcpt%d.%d@example.net>\r\n" % (m, r))
            if rng.random() < 0.1:
                c.send(1, b"550 5.1.1 <rcpt@example.net>: Recipient address rejected\r\n")
                txns += 1
            else:
                c.send(1, b"250 2.1.5 Ok\r\n")
        c.send(0, b"DATA\r\n")
        c.send(1, b"354 End data with <CR><LF>.<CR><LF>\r\n")
        body = b"Subject: message %d\r\n\r\n" % m + b"x" * 76 * rng.randint(25, 260) 
        body = b"\r\n".join(body[i:i + 78] for i in range(0, len(body), 78)) + b"\r\n.\r\n"
        c.send(0, body)
        c.send(1, b"250 2.0.0 Ok: queued as %05X\r\n" % n)
        txns += 1
    c.send(0, b"QUIT\r\n")
    c.send(1, b"221 2.0.0 Bye\r\n")
    c.close()
p.close()
print(f"{p.packets} packets, {txns} transactions")
