"""Partition ends as a fetch sees them, on the embedded broker (which answers ListOffsets with
the start of the last record batch + 1: see streams/offsets.py), and where a group member
starts reading."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.offsets import end_offsets, start_offsets

pytestmark = pytest.mark.broker


def _topic(bootstrap: str, partitions: int) -> str:
    name = f"ends-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(30)
    return name


def test_end_offsets_count_every_record_of_a_batched_produce(broker: str) -> None:
    topic = _topic(broker, 3)
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 200, "batch.size": 4_000_000})
    for n in range(5_000):
        producer.produce(topic, f"record-{n}".encode(), partition=0)
    for _ in range(7):
        producer.produce(topic, b"x", partition=1)
    assert producer.flush(30) == 0
    parts = [(topic, 0), (topic, 1), (topic, 2)]
    assert end_offsets({"bootstrap.servers": broker}, parts) == {
        (topic, 0): 5_000,
        (topic, 1): 7,
        (topic, 2): 0,
    }


def test_end_offsets_of_nothing_is_empty(broker: str) -> None:
    assert end_offsets({"bootstrap.servers": broker}, []) == {}


def test_a_group_starts_at_its_commits_or_at_the_start_of_the_log(broker: str) -> None:
    topic = _topic(broker, 2)
    producer = Producer({"bootstrap.servers": broker})
    for n in range(10):
        producer.produce(topic, f"record-{n}".encode(), partition=n % 2)
    assert producer.flush(30) == 0
    group = f"starts-{uuid.uuid4().hex[:8]}"
    member = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        member.assign([TopicPartition(topic, 0, 0)])
        member.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    finally:
        member.close()
    starts = start_offsets({"bootstrap.servers": broker}, group, [(topic, 0), (topic, 1)])
    assert starts == {(topic, 0): 3, (topic, 1): 0}
