"""A scripted AMQP 0-9-1 session with pika against the broker on 127.0.0.1:PORT.

Each operation the client performs is printed as one line, `op <method>` (the AMQP method
connbeat is to report for it), so a test can compare the transactions with what was done.
Run: python3 amqp-session.py PORT [--hold]   (--hold: keep the connection open until a
line comes on stdin, so that its sockets can still be attributed to processes)
"""
import sys

import pika

port = int(sys.argv[1])
params = pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0,
                                   credentials=pika.PlainCredentials("guest", "guest"))
conn = pika.BlockingConnection(params)
ch = conn.channel()


def op(method):
    print("op", method, flush=True)


ch.exchange_declare("cb.ex", exchange_type="direct")
op("exchange.declare")
ch.queue_declare("cb.q", arguments={"x-max-length": 100})
op("queue.declare")
ch.queue_bind("cb.q", "cb.ex", routing_key="rk")
op("queue.bind")
props = pika.BasicProperties(content_type="text/plain", delivery_mode=2, headers={"k": "v"})
for i in (1, 2):
    ch.basic_publish("cb.ex", "rk", f"hello {i}".encode(), properties=props)
    op("basic.publish")
method, _, body = ch.basic_get("cb.q")
op("basic.get")
assert body == b"hello 1", body
ch.basic_ack(method.delivery_tag)
op("basic.ack")

got = []


def on_message(c, m, p, b):
    got.append(b)
    c.basic_ack(m.delivery_tag)


tag = ch.basic_consume("cb.q", on_message)
op("basic.consume")
while not got:
    conn.process_data_events(time_limit=1)
op("basic.deliver")
op("basic.ack")
ch.basic_cancel(tag)
op("basic.cancel")
method, _, body = ch.basic_get("cb.q")
assert method is None
op("basic.get-empty")
ch.tx_select()
op("tx.select")
ch.basic_publish("", "cb.q", b"\x00\x01\x02", properties=pika.BasicProperties(content_type="application/octet-stream"))
op("basic.publish")
ch.tx_commit()
op("tx.commit")
ch.queue_delete("cb.q")
op("queue.delete")
try:
    ch.queue_declare("cb.missing", passive=True)
    raise SystemExit("the passive declare of a missing queue succeeded")
except pika.exceptions.ChannelClosedByBroker as e:
    assert e.reply_code == 404, e
op("channel.close")
if "--hold" in sys.argv:
    print("holding", flush=True)
    sys.stdin.readline()
conn.close()
print("done", flush=True)
