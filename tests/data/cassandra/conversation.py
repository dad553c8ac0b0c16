"""A CQL conversation built with cassandra-driver's own protocol classes, for the tests
and the benchmark generator: python3 conversation.py VERSION COMPRESSION [REPEAT]
(VERSION 3, 4 or 5; COMPRESSION none, snappy or lz4; snappy is not a v5 compressor).

Requests are encoded by the driver (ProtocolHandler.encode_message); responses are
written with the driver's notation writers and checked by decoding them with the
driver's ProtocolHandler.decode_message; v5 frames after the STARTUP exchange go into
segments made by the driver's SegmentCodec. Prints one line per TCP send:
`c HEX` (client to server) or `s HEX` (server to client).

With --decoded (anywhere in the arguments), each send is also read back the way the
driver reads a server's bytes: Connection.process_io_buffer takes each direction's
stream apart (segments from the STARTUP answer on in v5, frames), requests are named by
the driver's opcode table, responses go through its process_msg and
ProtocolHandler.decode_message. After each send, one line per message it completed:
`decoded c|s STREAM OPCODE [rows=N] [error=N]` (rows: a RESULT of kind rows; error: an
ERROR's code).

Exits with status 3 when the driver or the compression library is missing."""
import io
import sys

try:
    from cassandra import ConsistencyLevel
    from cassandra.connection import Connection, locally_supported_compressions
    from cassandra.protocol import (AuthResponseMessage, BatchMessage, ExecuteMessage,
                                    OptionsMessage, PrepareMessage, ProtocolHandler,
                                    QueryMessage, RegisterMessage, RESULT_KIND_ROWS,
                                    StartupMessage, write_int, write_short, write_string,
                                    write_stringlist, write_stringmultimap, write_longstring)
    from cassandra.query import BatchType
    from cassandra.segment import SegmentCodec
except ImportError as e:
    print(f"cassandra-driver is not installed: {e}", file=sys.stderr)
    sys.exit(3)

DECODED = "--decoded" in sys.argv
ARGS = [a for a in sys.argv[1:] if a != "--decoded"]
VERSION = int(ARGS[0])
COMPRESSION = ARGS[1]
REPEAT = int(ARGS[2]) if len(ARGS) > 2 else 1
if COMPRESSION != "none" and COMPRESSION not in locally_supported_compressions:
    print(f"no {COMPRESSION} compressor (python-snappy, lz4) for cassandra-driver",
          file=sys.stderr)
    sys.exit(3)
compressor, decompressor = (None, None) if COMPRESSION == "none" \
    else locally_supported_compressions[COMPRESSION]
modern = False  # v5 segments in force
codec = SegmentCodec(*((compressor, decompressor) if COMPRESSION == "lz4" else (None, None)))
compress_bodies = False  # v3/v4 bodies compressed (after STARTUP)

OP = {"ERROR": 0x00, "READY": 0x02, "AUTHENTICATE": 0x03, "SUPPORTED": 0x06,
      "RESULT": 0x08, "EVENT": 0x0C, "AUTH_SUCCESS": 0x10}


class Reader(Connection):
    """One direction of the connection as the driver reads it: bytes go into the
    connection's buffer and Connection.process_io_buffer cuts them into segments (once
    checksumming is on) and frames, each handed to process_msg. No socket is opened."""

    def __init__(self):
        super().__init__(protocol_version=VERSION)
        # As the driver does when it sends the STARTUP naming the compression; the
        # compressor itself (and with it lz4 segments) is on after the answer.
        self._compressor, self.decompressor = compressor, decompressor

    def feed(self, data):
        self._iobuf.write(data)
        self.process_io_buffer()
        if failures:  # process_msg logs and ignores what its callbacks raise
            raise failures[0]

    def defunct(self, exc):
        raise exc


class ClientReader(Reader):
    """The requests. The driver only ever sends them: their frames are named by its
    opcode table, and each registers the decoder that reads its answer, as send_msg
    does."""

    def process_msg(self, header, body):
        decoded("c", header.stream, ProtocolHandler.message_types_by_opcode[header.opcode])
        answered = startup_answered if header.opcode == StartupMessage.opcode else answer
        server._requests[header.stream] = (answered, ProtocolHandler.decode_message, None)


class ServerReader(Reader):
    """The responses, through the driver's own process_msg; server pushes (stream -1)
    end in handle_pushed."""

    def handle_pushed(self, response):
        answer(response)


failures = []


def noting_failures(callback):
    def wrapper(msg):
        try:
            callback(msg)
        except Exception as e:
            failures.append(e)
    return wrapper


def decoded(side, stream, msg, extra=""):
    print("decoded", side, stream, msg.name + extra)


@noting_failures
def answer(msg):
    if isinstance(msg, Exception) and not hasattr(msg, "stream_id"):
        raise msg
    extra = ""
    if msg.name == "RESULT" and msg.kind == RESULT_KIND_ROWS:
        extra = f" rows={len(msg.parsed_rows)}"
    elif msg.name == "ERROR":
        extra = f" error={msg.code}"
    decoded("s", msg.stream_id, msg, extra)


@noting_failures
def startup_answered(msg):
    # The STARTUP's answer turns the negotiated compression on, and in v5 segments
    # (checksumming) in both directions.
    answer(msg)
    for r in (client, server):
        r._enable_compression()
        if VERSION >= 5:
            r._enable_checksumming()


if DECODED:
    client, server = ClientReader(), ServerReader()


def emit(side, data):
    if modern:
        buf = io.BytesIO()
        codec.encode(buf, data)
        data = buf.getvalue()
    print(side, data.hex())
    if DECODED:
        (client if side == "c" else server).feed(data)


def request(msg, stream):
    c = compressor if compress_bodies else None
    emit("c", ProtocolHandler.encode_message(msg, stream, VERSION, c, False))


def response(op, stream, body):
    flags = 0
    if compress_bodies and body:
        body = compressor(body)
        flags = 0x01
    head = bytes([0x80 | VERSION, flags]) + stream.to_bytes(2, "big", signed=True) \
        + bytes([OP[op]]) + len(body).to_bytes(4, "big")
    # The driver must read what connbeat will read.
    ProtocolHandler.decode_message(VERSION, {}, stream, flags, OP[op], body,
                                   decompressor if flags else None, None)
    emit("s", head + body)


def body(*writes):
    f = io.BytesIO()
    for w, *args in writes:
        w(f, *args)
    return f.getvalue()


def colspec(f, name, *type_ids):
    write_string(f, name)
    for t in type_ids:
        write_short(f, t)


def rows_result(n):
    f = io.BytesIO()
    write_int(f, 2)  # rows
    write_int(f, 0x0001)  # global table spec
    write_int(f, 2)
    write_string(f, "ks")
    write_string(f, "t")
    colspec(f, "a", 0x0009)  # int
    colspec(f, "b", 0x0021, 0x000D, 0x0020, 0x0009)  # map<varchar, list<int>>
    write_int(f, n)
    for i in range(n):
        write_int(f, 4)
        write_int(f, i)
        write_int(f, -1)  # null map
    return f.getvalue()


def prepared_result():
    f = io.BytesIO()
    write_int(f, 4)
    write_short(f, 16)
    f.write(bytes(range(16)))
    if VERSION >= 5:
        write_short(f, 16)
        f.write(bytes(range(16, 32)))
    write_int(f, 0x0001)  # bind variables: global table spec
    write_int(f, 2)
    if VERSION >= 4:
        write_int(f, 1)
        write_short(f, 0)
    write_string(f, "ks")
    write_string(f, "t")
    colspec(f, "a", 0x0009)
    colspec(f, "b", 0x000D)
    write_int(f, 0x0004)  # result: no metadata
    write_int(f, 0)
    return f.getvalue()


def error(code, msg):
    return body((write_int, code), (write_string, msg))


request(OptionsMessage(), 0)
response("SUPPORTED", 0, body((write_stringmultimap,
                              {"CQL_VERSION": ["3.4.5"], "COMPRESSION": ["snappy", "lz4"]})))
options = {"CQL_VERSION": "3.0.0"}
if COMPRESSION != "none":
    options["COMPRESSION"] = COMPRESSION
request(StartupMessage(cqlversion="3.0.0", options=options), 1)
response("AUTHENTICATE", 1, body((write_string, "org.apache.cassandra.auth.PasswordAuthenticator")))
if VERSION == 5:
    modern = True
else:
    compress_bodies = COMPRESSION != "none"
request(AuthResponseMessage(b"\x00cassandra\x00s3cret-password"), 1)
response("AUTH_SUCCESS", 1, body((write_int, -1)))
request(RegisterMessage(["SCHEMA_CHANGE"]), 2)
response("READY", 2, b"")
request(QueryMessage("USE ks", ConsistencyLevel.ONE), 3)
response("RESULT", 3, body((write_int, 3), (write_string, "ks")))
for _ in range(REPEAT):
    request(QueryMessage("SELECT a, b FROM t", ConsistencyLevel.ONE), 4)
    request(PrepareMessage("INSERT INTO t (a, b) VALUES (?, ?)"), 5)
    response("RESULT", 5, prepared_result())
    response("RESULT", 4, rows_result(2))
    request(ExecuteMessage(bytes(range(16)), [b"\x00\x00\x00\x07", b"x"], ConsistencyLevel.ONE,
                           result_metadata_id=bytes(range(16, 32)) if VERSION >= 5 else None), 6)
    response("RESULT", 6, body((write_int, 1)))
    request(BatchMessage(BatchType.LOGGED, [(False, "INSERT INTO t (a) VALUES (1)", ())], ConsistencyLevel.ONE), 7)
    response("RESULT", 7, body((write_int, 1)))
    request(QueryMessage("DROP KEYSPACE nope", ConsistencyLevel.ONE), 8)
    response("ERROR", 8, error(0x2300, "Cannot drop non existing keyspace 'nope'."))
response("EVENT", -1, body((write_string, "SCHEMA_CHANGE"), (write_string, "CREATED"),
                           (write_string, "TABLE"), (write_string, "ks"), (write_string, "t2")))
