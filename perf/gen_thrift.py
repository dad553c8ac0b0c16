#!/usr/bin/env python3
"""Writes a pcap of Thrift-RPC traffic on port 9090 for perf/proto_bench.sh: connections
cycling through binary/compact protocols over socket/framed transports, each a session
of 20 rounds of the Calc calls of tests/data/thrift/calc.thrift (ping, add, echo,
points, a failing divide, a oneway note). The bytes come from the code thrift-compiler
generates and the `thrift` library: the generated client writes each call, the generated
processor answers it (through memory transports), until MIN_PACKETS.

    perf/gen_thrift.py OUT.pcap [MIN_PACKETS]     (default 400,000)
Prints the packets, connections and transactions written."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import pcapgen  # noqa: E402

ROUNDS = 20
here = os.path.dirname(os.path.abspath(__file__))
gen = tempfile.mkdtemp(prefix="connbeat-thrift-gen.")
subprocess.run(["thrift", "--gen", "py", "-out", gen,
                os.path.join(here, "..", "tests", "data", "thrift", "calc.thrift")], check=True)
sys.path.insert(0, gen)
sys.path.insert(0, os.path.join(here, "..", "tests", "services"))
from calc import Calc  # noqa: E402
from calc_handler import Handler  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.transport import TTransport  # noqa: E402


def session(proto, framed):
    processor = Calc.Processor(Handler())
    sends = []
    calls = [("ping", ()), ("add", (2, 3)), ("echo", ("hello thrift",)), ("points", (3,)),
             ("divide", (1, 0)), ("note", ("bye",))]
    for _ in range(ROUNDS):
        for name, args in calls:
            out = TTransport.TMemoryBuffer()
            t = TTransport.TFramedTransport(out) if framed else out
            client = Calc.Client(proto(t))
            getattr(client, "send_" + name)(*args)
            req = out.getvalue()
            sends.append((True, req))
            if name == "note":
                continue
            inp = TTransport.TMemoryBuffer(req)
            rep = TTransport.TMemoryBuffer()
            it = TTransport.TFramedTransport(inp) if framed else inp
            ot = TTransport.TFramedTransport(rep) if framed else rep
            processor.process(proto(it), proto(ot))
            sends.append((False, rep.getvalue()))
    return sends


variants = [session(p, f) for p in (TBinaryProtocol.TBinaryProtocol,
                                    TCompactProtocol.TCompactProtocol) for f in (False, True)]
packets, conns = pcapgen.run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 400_000,
                             variants, 9090)
print(f"{packets} packets, {conns} connections, {conns * 6 * ROUNDS} transactions")
