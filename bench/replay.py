"""replay: ``lifecycle audit replay --from-beginning`` (``sinks.replay.replay``) over
``privacy.audit``: every record decoded, re-hashed and linked by ``ChainFollower``, and written
out as a JSON line (to nowhere here), until the end of the topic.

Baseline: a plain confluent-kafka consumer reading the same records (the same consumer
settings, start offset and batched ``consume`` loop as ``replay``, nothing done with them), in
the same run. Rounds alternate, medians count. The records are the
ledger the ``ledger`` benchmark wrote (else one written here), published as the ledger stage
publishes them.
"""

from __future__ import annotations

import statistics
import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition

from bench import ledger, verify
from bench.base import Row, Scale, Target
from bench.environment import BenchEnv, produce_all, raw_producer
from core.db import make_engine
from sinks.ledger import iter_records
from sinks.replay import BATCH, replay
from streams.codec import SingleObjectCodec
from streams.topics import AUDIT

NAME = "replay"
ROUNDS = 3


def run(env: BenchEnv, scale: Scale) -> list[Row]:
    path, _public_key, count = env.cache.get(ledger.NAME) or verify.write_ledger(env, scale)
    codec = SingleObjectCodec()
    engine = make_engine(f"sqlite:///{path}")
    records = [
        (
            entry.subject_ref.encode(),
            codec.encode("lifecycle.AuditRecord", entry.as_audit_record()),
            0,
        )
        for entry in iter_records(engine)
    ]
    engine.dispose()
    figures, baselines = [], []
    with env.broker(NAME) as bootstrap:
        produce_all(raw_producer(bootstrap), AUDIT, records)
        config = {"bootstrap.servers": bootstrap}
        for _ in range(ROUNDS):
            baselines.append(count / raw_consume(config, count))
            emitted = 0

            def emit(line: bytes) -> None:
                nonlocal emitted
                line + b"\n"  # what the command does before writing it
                emitted += 1

            began = time.perf_counter()
            report = replay(config, codec, emit)
            figures.append(count / (time.perf_counter() - began))
            assert report.ok and emitted == count, report.summary()
    return [
        Row(
            NAME,
            "audit replay of privacy.audit with chain check",
            "records/s",
            statistics.median(figures),
            statistics.median(baselines),
            "raw consume of the same records (same consume loop)",
            Target("ratio_at_least", 0.5),
            {"records": count, "rounds": ROUNDS},
        )
    ]


def raw_consume(config: dict[str, str], count: int) -> float:
    """Seconds for a plain consumer to read ``privacy.audit`` to its end (as ``replay`` does)."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"bench-raw-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        began = time.perf_counter()
        low, _high = consumer.get_watermark_offsets(TopicPartition(AUDIT, 0), timeout=10)
        consumer.assign([TopicPartition(AUDIT, 0, low)])
        seen = 0
        done = False
        while not done:
            for message in consumer.consume(BATCH, 0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        done = True
                        break
                    continue
                message.value()
                seen += 1
        elapsed = time.perf_counter() - began
        assert seen == count, (seen, count)
        return elapsed
    finally:
        consumer.close()
