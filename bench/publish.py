"""publish: JSON lines to encrypted Avro records acknowledged by the broker (``lifecycle
publish``'s path: validate, fetch data keys, encrypt three fields and ``subject_id``, encode,
idempotent produce with all acks, wait for every delivery report).

Baseline: a plain confluent-kafka producer (same configuration) sending random bytes of the
sizes just published under the same keys, in the same run. Rounds alternate, medians count.
"""

from __future__ import annotations

import os
import statistics
import time

from bench.base import Row, Scale, Target
from bench.environment import (
    BenchEnv,
    create_topic,
    produce_all,
    raw_producer,
    read_records,
)
from bench.workload import traffic_lines
from lifecycle.runtime import Runtime
from streams.topics import CUSTOMER_EVENTS

NAME = "publish"
RAW_TOPIC = "bench.raw"
ROUNDS = 3


def run(env: BenchEnv, scale: Scale) -> list[Row]:
    count = scale.pick(60_000, 2_000)
    warm = scale.pick(10_000, 200)
    lines = traffic_lines(warm + count, scale.pick(10_000, 300))
    with env.broker(NAME) as bootstrap:
        settings = env.settings(bootstrap, env.folder(NAME))
        runtime = Runtime(settings).open()
        publisher = runtime.publisher()
        try:
            publisher.publish_lines(lines[:warm])  # connections up, first keys created
            timed = lines[warm:]
            create_topic(bootstrap, RAW_TOPIC, 4)
            producer = raw_producer(bootstrap)
            figures, baselines, cpu = [], [], []
            shapes: list[tuple[bytes, bytes]] = []
            for _ in range(ROUNDS):
                began, cpu_began = time.perf_counter(), time.process_time()
                report = publisher.publish_lines(timed)
                elapsed = time.perf_counter() - began
                assert report.ok and report.published == count, report.errors[:3]
                figures.append(count / elapsed)
                cpu.append((time.process_time() - cpu_began) / count * 1e6)
                if not shapes:  # the baseline sends bytes of the sizes just published
                    shapes = _published_shapes(bootstrap, runtime, warm + count)[warm:]
                    noise = os.urandom(1 << 16)
                    raw = [(key, noise[: len(value)], None) for key, value in shapes]
                    produce_all(producer, RAW_TOPIC, raw[:1000])  # connections up
                began = time.perf_counter()
                produce_all(producer, RAW_TOPIC, raw)
                baselines.append(count / (time.perf_counter() - began))
        finally:
            publisher.close()
    return [
        Row(
            NAME,
            "JSON line -> encrypted Avro record acked",
            "events/s",
            statistics.median(figures),
            statistics.median(baselines),
            "raw confluent-kafka produce, same sizes and keys",
            Target("at_least", 30_000),
            {
                "events": count,
                "rounds": ROUNDS,
                "cpu_us_per_event": round(statistics.median(cpu), 1),
                "mean_record_bytes": round(sum(len(v) for _, v in shapes) / len(shapes)),
            },
        )
    ]


def _published_shapes(bootstrap: str, runtime: Runtime, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first ``count`` records published, in publishing order."""
    records = read_records(bootstrap, CUSTOMER_EVENTS, count)
    order = {
        id(m): runtime.codec.decode("lifecycle.CustomerEvent", m.value())["event_id"]
        for m in records
    }
    return [(m.key(), m.value()) for m in sorted(records, key=lambda m: order[id(m)])]
