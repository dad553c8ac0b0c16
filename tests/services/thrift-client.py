"""Calls the Calc service (tests/services/thrift-server.py) on 127.0.0.1:argv[2] with the
code generated into argv[1], speaking argv[3] over argv[4]. Prints the methods it called,
in order, one line; then keeps its connection open until its standard input closes (so
that the test can see which process owns it)."""
import sys

sys.path.insert(0, sys.argv[1])
from calc import Calc  # noqa: E402
from calc.ttypes import Oops  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402

sock = TSocket.TSocket("127.0.0.1", int(sys.argv[2]))
trans = {"socket": TTransport.TBufferedTransport,
         "framed": TTransport.TFramedTransport}[sys.argv[4]](sock)
proto = {"binary": TBinaryProtocol.TBinaryProtocol,
         "compact": TCompactProtocol.TCompactProtocol}[sys.argv[3]](trans)
client = Calc.Client(proto)
trans.open()
called = []
client.ping(); called.append("ping")
assert client.add(2, 3) == 5; called.append("add")
assert client.echo("héllo") == "héllo"; called.append("echo")
assert len(client.points(2)) == 2; called.append("points")
try:
    client.divide(1, 0)
    raise SystemExit("divide by zero did not raise")
except Oops:
    called.append("divide")
client.note("bye"); called.append("note")
assert client.add(40, 2) == 42; called.append("add")
print(" ".join(called), flush=True)
sys.stdin.read()
trans.close()
