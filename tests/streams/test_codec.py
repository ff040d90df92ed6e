"""Avro single-object encoding and the Confluent wire format carry every topic record."""

from __future__ import annotations

import pytest

from streams.codec import SINGLE_OBJECT_MAGIC, ConfluentCodec, SingleObjectCodec
from streams.exceptions import DecodeError, EncodeError

from tests_support import customer_event


def test_single_object_record_starts_with_magic_and_fingerprint_and_round_trips() -> None:
    codec = SingleObjectCodec()
    record = customer_event()
    data = codec.encode("lifecycle.CustomerEvent", record)
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert codec.decode("lifecycle.CustomerEvent", data) == record


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"kind": "used"}', "not an Avro single-object record"),
        (b"", "not an Avro single-object record"),
        (SINGLE_OBJECT_MAGIC + b"\x01" * 8 + b"\x00", "unknown schema fingerprint"),
    ],
)
def test_records_that_are_not_ours_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        SingleObjectCodec().decode("lifecycle.CustomerEvent", data)


def test_truncated_and_padded_bodies_are_refused() -> None:
    codec = SingleObjectCodec()
    data = codec.encode("lifecycle.CustomerEvent", customer_event())
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode("lifecycle.CustomerEvent", data[:-5])
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode("lifecycle.CustomerEvent", data + b"\x00\x00")


def test_a_record_of_another_type_is_refused() -> None:
    codec = SingleObjectCodec()
    data = codec.encode("lifecycle.CustomerEvent", customer_event())
    with pytest.raises(DecodeError, match=r"expected a lifecycle\.Decision"):
        codec.decode("lifecycle.Decision", data)


def test_a_record_that_does_not_match_its_schema_is_an_encode_error() -> None:
    record = customer_event()
    del record["subject_ref"]
    with pytest.raises(EncodeError, match="CustomerEvent"):
        SingleObjectCodec().encode("lifecycle.CustomerEvent", record)


def test_confluent_wire_format_round_trips_through_the_registry_client() -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    registry = SchemaRegistryClient.new_client({"url": "mock://codec-test"})  # in-process
    producer_side = ConfluentCodec("mock://codec-test", client=registry)
    consumer_side = ConfluentCodec("mock://codec-test", client=registry)
    record = customer_event()
    data = producer_side.encode("lifecycle.CustomerEvent", record, "customer.events")
    assert data[0] == 0  # Confluent magic byte, then the registry's schema id
    assert consumer_side.decode("lifecycle.CustomerEvent", data, "customer.events") == record
