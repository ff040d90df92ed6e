"""The Schema Registry path: Confluent wire format through confluent-kafka's registry client.

No registry server can run here, so the tests use confluent-kafka's in-process mock registry
(``mock://``), shared by a producer and a consumer on a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from processors.intake import decode_event
from processors.policy import load_policies
from schemas.files import load_topic_schema, schema_json
from streams.broker import free_port
from streams.codec import ConfluentCodec
from streams.exceptions import DecodeError, RegistryUnavailableError
from streams.keys import MemoryKeyStore
from streams.publisher import Publisher
from streams.topics import CUSTOMER_EVENTS, DECISIONS

from fixtures.broker import REPO
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


def test_the_publisher_writes_every_kind_through_the_registry_codec(broker: str) -> None:
    """The publisher names the body's union branch for the encoder; the registry path (whose
    serializer may validate or transform the record first) must take that form too."""
    registry = SchemaRegistryClient.new_client({"url": "mock://registry-publisher"})
    lines = (REPO / "examples" / "events.jsonl").read_bytes().splitlines()
    publisher = Publisher(
        {"bootstrap.servers": broker},
        MemoryKeyStore(),
        ConfluentCodec("mock://r", client=registry),
        load_policies(REPO / "policy").vocabulary(),
        listen_for_revocations=False,
    )
    report = publisher.publish_lines(lines)
    assert report.ok and report.published == len(lines)

    reader = ConfluentCodec("mock://r", client=registry)
    decoded = {
        record["event_id"]: record
        for record in (
            reader.decode("lifecycle.CustomerEvent", m.value(), CUSTOMER_EVENTS)
            for m in consume_all(broker, CUSTOMER_EVENTS, len(lines))
        )
    }
    for line in lines:
        sent = json.loads(line)
        body = decoded[sent["event_id"]]["body"]
        assert decoded[sent["event_id"]]["kind"] == sent["kind"]
        if sent["kind"] == "collected":
            assert sorted(v["category"] for v in body["data"]) == sorted(sent["data"])
        elif sent["kind"] == "deletion_requested":
            assert body["request_id"] == sent["request_id"]
        elif sent["kind"] == "consent_changed":
            assert (body["purpose"], body["granted"]) == (sent["purpose"], sent["granted"])
        else:
            assert (body["purpose"], body["categories"]) == (sent["purpose"], sent["categories"])


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


# --------------------------------------------------------------------------- registry outages


class _Answering(http.server.BaseHTTPRequestHandler):
    status = 503
    body = b'{"error_code": 50301, "message": "unavailable"}'

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def registry_answering(status: int, body: bytes) -> Iterator[str]:
    """A local HTTP server answering every request with ``status`` and ``body`` (a registry
    that is failing, or that does not know the schema id)."""
    handler = type("Handler", (_Answering,), {"status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def codec_for(url: str) -> ConfluentCodec:
    client = SchemaRegistryClient({"url": url, "max.retries": 0, "timeout": 2})
    return ConfluentCodec(url, client=client)


WIRE_RECORD = b"\x00" + (7).to_bytes(4, "big") + b"\x02\x04ab"
"""Confluent framing (magic 0, schema id 7) around a body: a well-formed record."""


def test_a_schema_id_the_registry_does_not_know_is_a_decode_error() -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://registry-unknown-id"})
    codec = ConfluentCodec("mock://r", client=registry)
    with pytest.raises(DecodeError, match=r"lifecycle\.CustomerEvent: SchemaRegistryError"):
        codec.decode("lifecycle.CustomerEvent", WIRE_RECORD, "customer.events")


def test_a_real_registry_answering_not_found_is_a_decode_error() -> None:
    not_found = b'{"error_code": 40403, "message": "Schema not found"}'
    with (
        registry_answering(404, not_found) as url,
        pytest.raises(DecodeError, match="Schema not found"),
    ):
        codec_for(url).decode("lifecycle.CustomerEvent", WIRE_RECORD, "customer.events")


@pytest.mark.parametrize("status", [500, 503, 401])
def test_a_failing_or_refusing_registry_is_unavailable_not_a_bad_record(status: int) -> None:
    with (
        registry_answering(status, b'{"error_code": 1, "message": "no"}') as url,
        pytest.raises(RegistryUnavailableError, match="Schema Registry unavailable") as caught,
    ):
        codec_for(url).decode("lifecycle.CustomerEvent", WIRE_RECORD, "customer.events")
    assert not isinstance(caught.value, DecodeError)


def test_an_unreachable_registry_is_unavailable_for_decoding_and_encoding() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    codec = codec_for(url)
    with pytest.raises(RegistryUnavailableError, match="ConnectError"):
        codec.decode("lifecycle.CustomerEvent", WIRE_RECORD, "customer.events")
    with pytest.raises(RegistryUnavailableError):
        codec.encode("lifecycle.CustomerEvent", customer_event(), "customer.events")


def test_a_record_without_the_wire_framing_is_still_a_decode_error() -> None:
    codec = codec_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DecodeError, match="magic byte"):
        codec.decode("lifecycle.CustomerEvent", b"\xc3\x01garbage", "customer.events")


# --------------------------------------------------------------------------- the intake


class FlakyCodec:
    """The real codec behind a registry that is unavailable for the first ``outages`` calls."""

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.calls = 0
        self._registry = SchemaRegistryClient.new_client({"url": "mock://registry-flaky"})
        self._codec = ConfluentCodec("mock://r", client=self._registry)

    def encode(self, record_name: str, record: Any, topic: str = "") -> bytes:
        return self._codec.encode(record_name, record, topic)

    def decode(self, record_name: str, data: bytes, topic: str = "") -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.outages:
            raise RegistryUnavailableError("Schema Registry unavailable decoding: ConnectError")
        return self._codec.decode(record_name, data, topic)


def test_the_intake_waits_out_a_registry_outage_and_then_decodes_the_record() -> None:
    codec = FlakyCodec(outages=3)
    value = codec.encode("lifecycle.CustomerEvent", customer_event(event_id="ev-9"), "t")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    record = asyncio.run(decode_event(codec, value, "t", patience=60, sleep=sleep))

    assert record["event_id"] == "ev-9"
    assert slept == [0.25, 0.5, 1.0]  # backs off, then gets the answer


def test_the_intake_stops_after_its_patience_rather_than_skip_the_record() -> None:
    codec = FlakyCodec(outages=1_000)
    value = codec.encode("lifecycle.CustomerEvent", customer_event(), "t")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(RegistryUnavailableError):
        asyncio.run(decode_event(codec, value, "t", patience=10, sleep=sleep))
    assert sum(slept) >= 10 and sum(slept) < 20
