"""The publisher's writer of customer events and the decision stage's writer of decisions give
exactly the codec's bytes, for every kind and every value the schema allows, and leave what
they were not written for to the codec (whose bytes, or error, the caller then gets)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codec import SingleObjectCodec
from streams.event_writer import (
    CUSTOMER_EVENT_FINGERPRINT,
    DECISION_FINGERPRINT,
    CustomerEventWriter,
    DecisionWriter,
)
from streams.exceptions import EncodeError
from streams.topics import CUSTOMER_EVENTS, DECISIONS

CODEC = SingleObjectCodec()
RECORD = "lifecycle.CustomerEvent"


def _writes_as_the_codec(
    writer: CustomerEventWriter | DecisionWriter, name: str, record: dict[str, Any]
) -> bytes | None:
    """``writer`` gives the codec's bytes for ``record``, or its error (then None)."""
    try:
        expected = CODEC.encode(name, record)
    except EncodeError:  # e.g. a lone surrogate in a text: the writer must say the same
        with pytest.raises(EncodeError):
            writer.encode(record)
        return None
    assert writer.encode(record) == expected
    return expected


def _writer() -> CustomerEventWriter:
    writer = CustomerEventWriter.for_codec(CODEC, CUSTOMER_EVENTS)
    assert writer is not None
    return writer


def _value(category: str = "email", version: int = 1, size: int = 40) -> dict[str, Any]:
    return {
        "category": category,
        "key_version": version,
        "nonce": os.urandom(12),
        "ciphertext": os.urandom(size),
    }


def _record(body: Any, **changes: Any) -> dict[str, Any]:
    now = datetime(2026, 3, 1, 10, 0, 0, 123_456, tzinfo=UTC)
    return {
        "event_id": "ev-1",
        "kind": "collected",
        "occurred_at": now,
        "published_at": now + timedelta(seconds=1),
        "source": "billing",
        "subject_ref": "a" * 64,
        "subject": _value("subject_id"),
        "actor": {"id": "clerk-1", "role": "billing_clerk"},
        "body": body,
        "auth": None,
        **changes,
    }


BODIES = [
    (
        "collected",
        (
            "lifecycle.Collected",
            {"channel": "web_form", "purposes": ["billing"], "data": [_value(), _value("name")]},
        ),
    ),
    ("collected", ("lifecycle.Collected", {"channel": "x", "purposes": [], "data": []})),
    ("used", ("lifecycle.Used", {"categories": ["email", "name"], "purpose": "billing"})),
    (
        "shared",
        (
            "lifecycle.Shared",
            {"categories": ["email"], "recipient": "authorities", "purpose": "legal_compliance"},
        ),
    ),
    (
        "deletion_requested",
        (
            "lifecycle.DeletionRequested",
            {"request_id": "r-1", "categories": None, "key_versions_ended": {}},
        ),
    ),
    (
        "deletion_requested",
        (
            "lifecycle.DeletionRequested",
            {
                "request_id": "r-2",
                "categories": ["email"],
                "key_versions_ended": {"email": 3, "subject_id": 0, "name": 70_000},
            },
        ),
    ),
    (
        "consent_changed",
        ("lifecycle.ConsentChanged", {"purpose": "personalization", "granted": True}),
    ),
    (
        "consent_changed",
        ("lifecycle.ConsentChanged", {"purpose": "personalization", "granted": False}),
    ),
]


def test_the_writer_was_written_for_the_current_customer_event_schema() -> None:
    # A schema change must revisit CustomerEventWriter (until then the codec writes all)
    assert CODEC.writer_fingerprint(RECORD) == CUSTOMER_EVENT_FINGERPRINT


@pytest.mark.parametrize(
    ("kind", "body"), BODIES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BODIES)]
)
def test_every_kind_is_written_as_the_codec_writes_it(
    kind: str, body: tuple[str, dict[str, Any]]
) -> None:
    writer = _writer()
    record = _record(body, kind=kind)
    assert writer.encode(record) == CODEC.encode(RECORD, record)
    assert CODEC.decode(RECORD, writer.encode(record))["body"] == body[1]
    assert writer.declined == 0


_TEXT = st.text(max_size=300)
_TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2100, 1, 1),
    timezones=st.builds(lambda h: timezone(timedelta(hours=h)), st.integers(-12, 12)),
)
_VALUES = st.builds(
    lambda category, version, nonce, ciphertext: {
        "category": category,
        "key_version": version,
        "nonce": nonce,
        "ciphertext": ciphertext,
    },
    _TEXT,
    st.integers(-(2**31), 2**31 - 1),
    st.binary(max_size=20),
    st.binary(max_size=20_000),
)


@settings(max_examples=200, deadline=None)
@given(
    event_id=_TEXT,
    occurred_at=_TIMES,
    published_at=_TIMES,
    source=_TEXT,
    subject=_VALUES,
    data=st.lists(_VALUES, max_size=5),
    purposes=st.lists(_TEXT, max_size=70),
    ended=st.dictionaries(_TEXT, st.integers(-(2**31), 2**31 - 1), max_size=5),
)
def test_any_record_the_schema_allows_is_written_as_the_codec_writes_it(
    event_id: str,
    occurred_at: datetime,
    published_at: datetime,
    source: str,
    subject: dict[str, Any],
    data: list[dict[str, Any]],
    purposes: list[str],
    ended: dict[str, int],
) -> None:
    writer = _writer()
    common = {
        "event_id": event_id,
        "occurred_at": occurred_at,
        "published_at": published_at,
        "source": source,
        "subject": subject,
    }
    for kind, body in (
        (
            "collected",
            ("lifecycle.Collected", {"channel": source, "purposes": purposes, "data": data}),
        ),
        (
            "deletion_requested",
            (
                "lifecycle.DeletionRequested",
                {
                    "request_id": event_id,
                    "categories": purposes or None,
                    "key_versions_ended": ended,
                },
            ),
        ),
    ):
        _writes_as_the_codec(writer, RECORD, _record(body, kind=kind, **common))


@pytest.mark.parametrize(
    "change",
    [
        {"occurred_at": datetime(2026, 3, 1, 10, 0)},  # no zone
        {"occurred_at": 1_772_000_000_000},  # already millis
        {"subject": {**_value("subject_id"), "key_version": 2**31}},  # beyond an Avro int
        {"subject": {**_value("subject_id"), "nonce": bytearray(12)}},
        {"kind": "invented"},
        {"body": {"categories": ["email"], "purpose": "billing"}},  # no branch named
        {"auth": {"source": "billing", "key_version": 1, "mac": b"\x00" * 32}},
    ],
    ids=[
        "naive-time",
        "int-time",
        "int-overflow",
        "bytearray",
        "unknown-kind",
        "no-branch",
        "auth",
    ],
)
def test_what_the_writer_was_not_written_for_goes_to_the_codec(change: dict[str, Any]) -> None:
    writer = _writer()
    _writes_as_the_codec(writer, RECORD, {**_record(BODIES[2][1], kind="used"), **change})
    assert writer.declined == 1


def test_a_codec_of_another_wire_format_gets_no_writer() -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from streams.codec import ConfluentCodec

    registry = SchemaRegistryClient.new_client({"url": "mock://writer-test"})
    codec = ConfluentCodec("mock://writer-test", client=registry)
    assert CustomerEventWriter.for_codec(codec, CUSTOMER_EVENTS) is None
    assert DecisionWriter.for_codec(codec, DECISIONS) is None


# -- decisions ---------------------------------------------------------------------------

DECISION = "lifecycle.Decision"


def _decision_writer() -> DecisionWriter:
    writer = DecisionWriter.for_codec(CODEC, DECISIONS)
    assert writer is not None
    return writer


def _decision(**changes: Any) -> dict[str, Any]:
    now = datetime(2026, 3, 1, 10, 0, 0, 123_456, tzinfo=UTC)
    return {
        "event_id": "ev-1",
        "kind": "used",
        "subject_ref": "a" * 64,
        "source": "billing",
        "categories": ["email"],
        "purpose": "billing",
        "purposes": [],
        "consent_granted": None,
        "recipient": None,
        "actor_role": "billing_clerk",
        "decision": "allow",
        "reason_code": "allowed",
        "rule": "uses.billing",
        "policy_version": "1",
        "occurred_at": now,
        "decided_at": now + timedelta(milliseconds=5),
        "source_partition": 3,
        "source_offset": 1_234_567,
        "erasure": None,
        **changes,
    }


def test_the_decision_writer_was_written_for_the_current_decision_schema() -> None:
    assert CODEC.writer_fingerprint(DECISION) == DECISION_FINGERPRINT


_OPTIONAL_TEXT = st.none() | _TEXT


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(_TEXT, min_size=6, max_size=6),
    categories=st.lists(_TEXT, max_size=70),
    purposes=st.lists(_TEXT, max_size=5),
    purpose=_OPTIONAL_TEXT,
    recipient=_OPTIONAL_TEXT,
    actor_role=_OPTIONAL_TEXT,
    granted=st.none() | st.booleans(),
    decision=st.sampled_from(["allow", "deny"]),
    occurred_at=_TIMES,
    decided_at=_TIMES,
    partition=st.integers(-(2**31), 2**31 - 1),
    offset=st.integers(-(2**63), 2**63 - 1),
)
def test_any_decision_the_schema_allows_is_written_as_the_codec_writes_it(
    texts: list[str],
    categories: list[str],
    purposes: list[str],
    purpose: str | None,
    recipient: str | None,
    actor_role: str | None,
    granted: bool | None,
    decision: str,
    occurred_at: datetime,
    decided_at: datetime,
    partition: int,
    offset: int,
) -> None:
    event_id, kind, source, reason_code, rule, policy_version = texts
    record = _decision(
        event_id=event_id,
        kind=kind,
        source=source,
        categories=categories,
        purpose=purpose,
        purposes=purposes,
        consent_granted=granted,
        recipient=recipient,
        actor_role=actor_role,
        decision=decision,
        reason_code=reason_code,
        rule=rule,
        policy_version=policy_version,
        occurred_at=occurred_at,
        decided_at=decided_at,
        source_partition=partition,
        source_offset=offset,
    )
    expected = _writes_as_the_codec(_decision_writer(), DECISION, record)
    if expected is not None:
        assert CODEC.decode(DECISION, expected)["event_id"] == event_id


@pytest.mark.parametrize(
    "change",
    [
        {
            "erasure": {
                "request_id": "r-1",
                "status": "completed",
                "shredded": ["email"],
                "retained": [],
            }
        },
        {"decided_at": datetime(2026, 3, 1, 10, 0)},  # no zone
        {"decision": "maybe"},  # not a symbol of the enum
        {"source_partition": 2**31},  # beyond an Avro int
        {"consent_granted": 1},  # not a boolean
    ],
    ids=["erasure", "naive-time", "unknown-verdict", "int-overflow", "int-as-boolean"],
)
def test_what_the_decision_writer_was_not_written_for_goes_to_the_codec(
    change: dict[str, Any],
) -> None:
    writer = _decision_writer()
    _writes_as_the_codec(writer, DECISION, _decision(**change))
    assert writer.declined == 1
