"""The Calc service of tests/data/thrift/calc.thrift, from the code `thrift --gen py`
generated into argv[1]; speaks argv[2] (binary | compact) over argv[3] (socket | framed)
on 127.0.0.1, a port the kernel picks, printed once listening. One connection at a time."""
import sys

sys.path.insert(0, sys.argv[1])
from calc import Calc  # noqa: E402
from calc_handler import Handler  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402


protocol = {"binary": TBinaryProtocol.TBinaryProtocolFactory(),
            "compact": TCompactProtocol.TCompactProtocolFactory()}[sys.argv[2]]
transport = {"socket": TTransport.TBufferedTransportFactory(),
             "framed": TTransport.TFramedTransportFactory()}[sys.argv[3]]
server = TSocket.TServerSocket(host="127.0.0.1", port=0)
server.listen()
print(server.handle.getsockname()[1], flush=True)
processor = Calc.Processor(Handler())
while True:
    client = server.accept()
    itrans, otrans = transport.getTransport(client), transport.getTransport(client)
    iprot, oprot = protocol.getProtocol(itrans), protocol.getProtocol(otrans)
    try:
        while True:
            processor.process(iprot, oprot)
    except TTransport.TTransportException:
        pass
    itrans.close()
