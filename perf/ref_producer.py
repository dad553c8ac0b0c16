#!/usr/bin/env python3
"""Reference producer for perf/ship.sh: sends pre-serialized events (NDJSON, one per line)
to a topic with confluent-kafka (librdkafka), the same settings as connbeat's Kafka output,
and prints events/s and CPU per 100k events of this process, in ship_bench's format.

    ref_producer.py BOOTSTRAP TOPIC PAYLOADS_FILE BATCH [COMPRESSION]
"""
import resource
import sys
import time

from confluent_kafka import Producer


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    bootstrap, topic, path, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    compression = sys.argv[5] if len(sys.argv) > 5 else "lz4"
    with open(path, "rb") as f:
        payloads = [line.rstrip(b"\n") for line in f]
    errors = []
    delivered = [0]

    def report(err, _msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[0] += 1

    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "1",
        "compression.codec": compression,
        "linger.ms": 2,
        "batch.num.messages": batch,
        "queue.buffering.max.messages": 1000000,
    })
    c0, t0 = cpu(), time.monotonic()
    for i, payload in enumerate(payloads):
        while True:
            try:
                p.produce(topic, payload, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 999:
            p.poll(0)
    p.flush(120)
    wall, used = time.monotonic() - t0, cpu() - c0
    n = len(payloads)
    assert delivered[0] == n and not errors, (delivered[0], errors[:3])
    print(f"confluent-kafka(py)->kafka batch={batch} {compression}\tevents={n}\twall_s={wall:.2f}"
          f"\tevents_per_s={n / wall:.0f}\tcpu_s={used:.2f}\tcpu_s_per_100k={used / n * 100000:.3f}")


if __name__ == "__main__":
    main()
