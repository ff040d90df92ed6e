"""The Schema Registry path: Confluent wire format through confluent-kafka's registry client.

No registry server can run here, so the tests use confluent-kafka's in-process mock registry
(``mock://``), shared by a producer and a consumer on a real broker.
"""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.codec import ConfluentCodec, load_topic_schema, schema_json
from streams.topics import DECISIONS

from tests_support import customer_event


def consume_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "registry-test"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    found: list[Any] = []
    try:
        for _ in range(200):
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                found.append(message)
            if len(found) >= count:
                break
    finally:
        consumer.close()
    return found


def test_a_consumer_on_the_registry_path_reads_what_a_producer_on_it_wrote(broker: str) -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://registry-e2e"})
    writer, reader = (
        ConfluentCodec("mock://r", client=registry),
        ConfluentCodec("mock://r", client=registry),
    )
    records = [customer_event(event_id=f"ev-{i}") for i in range(5)]
    producer = Producer({"bootstrap.servers": broker})
    for record in records:
        value = writer.encode("lifecycle.CustomerEvent", record, "customer.events")
        producer.produce("customer.events", value, record["subject_ref"].encode())
    assert producer.flush(10) == 0

    decoded = [
        reader.decode("lifecycle.CustomerEvent", m.value(), "customer.events")
        for m in consume_all(broker, "customer.events", len(records))
    ]

    assert sorted(d["event_id"] for d in decoded) == sorted(r["event_id"] for r in records)
    assert registry.get_subjects() == ["customer.events-value"]


def test_records_of_an_older_registered_schema_decode_into_the_current_one() -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://registry-evolution"})
    current = json.loads(schema_json(load_topic_schema("lifecycle.Decision")))
    older = dict(
        current,
        fields=[f for f in current["fields"] if f["name"] not in ("purposes", "consent_granted")],
    )
    old_writer = AvroSerializer(registry, json.dumps(older), conf={"auto.register.schemas": True})
    decision = {
        "event_id": "ev-1",
        "kind": "used",
        "subject_ref": "ab" * 32,
        "source": "billing",
        "categories": ["email"],
        "purpose": "billing",
        "recipient": None,
        "actor_role": "billing_clerk",
        "decision": "allow",
        "reason_code": "allowed",
        "rule": "purposes.billing",
        "policy_version": "2018-08-01",
        "occurred_at": customer_event()["occurred_at"],
        "decided_at": customer_event()["occurred_at"],
        "source_partition": 0,
        "source_offset": 7,
        "erasure": None,
    }
    data = old_writer(decision, SerializationContext(DECISIONS, MessageField.VALUE))

    decoded = ConfluentCodec("mock://r", client=registry).decode(
        "lifecycle.Decision", data, DECISIONS
    )

    assert decoded["event_id"] == "ev-1" and decoded["source_offset"] == 7
    assert decoded["purposes"] == [] and decoded["consent_granted"] is None  # the new defaults
