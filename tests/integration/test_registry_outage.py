"""A Schema Registry outage is not a bad record: the worker retries, and dead-letters nothing."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from streams.broker import free_port
from streams.partitioning import home_partition
from streams.topics import CUSTOMER_EVENTS, DEAD_LETTERS

from fixtures.broker import Workers, read_topic


def test_a_worker_whose_registry_is_unreachable_retries_and_dead_letters_nothing(
    workers: Workers, broker: str
) -> None:
    key = ("ab" * 32).encode()
    wire_record = b"\x00" + (1).to_bytes(4, "big") + b"\x02\x04ab"  # Confluent framing, id 1
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(CUSTOMER_EVENTS, wire_record, key, partition=home_partition(key, 4))
    assert producer.flush(10) == 0

    worker = workers.start(SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{free_port()}")
    worker.wait_for_log('"registry.unavailable"', timeout=90)
    time.sleep(2)  # a few more retries

    assert read_topic(broker, DEAD_LETTERS) == []
    assert "batch.decided" not in worker.log()
    assert worker.process.poll() is None, "the worker must wait for the registry, not exit yet"
