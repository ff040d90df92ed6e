"""The canonical encoding, and ChainFollower over streams of lifecycle.AuditRecord values."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from audit_helpers import erasure_decision, make_decision
from hypothesis import given
from hypothesis import strategies as st

from schemas import SCHEMA_DIR
from sinks.canonical import (
    CANONICAL_KEYS,
    GENESIS_HASH,
    canonical_bytes,
    chain_rows,
    row_hash,
    stored_values_hash,
)
from sinks.chain import ChainFollower
from sinks.exceptions import InvalidDecisionError
from sinks.memory import MemoryAuditSink
from sinks.stored import DECISION_FIELDS, decision_row, utc_text
from streams.codec import SingleObjectCodec


def _records(count: int, **sink_options: Any) -> list[dict[str, Any]]:
    sink = MemoryAuditSink(**sink_options)
    decisions = [make_decision(n) if n != 4 else erasure_decision(n) for n in range(1, count + 1)]
    return [entry.as_audit_record() for entry in sink.append(decisions)]


# --------------------------------------------------------------------------- encoding


def test_canonical_encoding_is_sorted_compact_utf8_json_that_the_stdlib_reproduces() -> None:
    row = decision_row(
        make_decision(1, rule='règle §3 \u2028 "quoted" \\ \x01', categories=["é", "name"])
    )
    row.update(seq=7, prev_hash=GENESIS_HASH, recorded_at="2025-03-01T09:00:00.125Z")
    document = json.loads(canonical_bytes(row))
    assert list(document) == sorted(document) == list(CANONICAL_KEYS)
    stdlib = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_bytes(row) == stdlib.encode()
    assert row_hash(row) == hashlib.sha256(stdlib.encode()).hexdigest()


def test_erasure_is_encoded_with_sorted_keys_inside_the_record() -> None:
    row = decision_row(erasure_decision(2))
    row.update(seq=1, prev_hash=GENESIS_HASH, recorded_at="2025-03-01T09:00:00.000Z")
    encoded = canonical_bytes(row).decode()
    assert '"erasure":{"request_id":"req-2","retained":[{"basis":' in encoded


def test_the_stored_values_hash_is_the_row_hash_of_the_same_record() -> None:
    rows = [
        decision_row(make_decision(1)),
        decision_row(make_decision(2, consent_granted=True, purposes=["billing", "é"])),
        decision_row(make_decision(3, consent_granted=False, recipient="authorities")),
        decision_row(erasure_decision(4)),
    ]
    for seq, row in enumerate(rows, 1):
        row.update(seq=seq, prev_hash=GENESIS_HASH, recorded_at="2025-03-01T09:00:00.125Z")
        row["hash"] = "f" * 64
        values = (*(row[key] for key in CANONICAL_KEYS), row["hash"])
        assert stored_values_hash(values) == row_hash(row)
        if row["consent_granted"] is not None:  # SQLite hands booleans back as 0/1
            as_int = (*(int(v) if v is row["consent_granted"] else v for v in values),)
            assert stored_values_hash(as_int) == row_hash(row)


@pytest.mark.parametrize(
    ("column", "value", "error"),
    [("categories", None, TypeError), ("consent_granted", 2, KeyError), ("rule", b"x", TypeError)],
)
def test_a_value_that_cannot_be_in_a_record_is_refused_by_every_encoder(
    column: str, value: Any, error: type[Exception]
) -> None:
    row = decision_row(make_decision(1))
    row.update(seq=1, prev_hash=GENESIS_HASH, recorded_at="2025-03-01T09:00:00.125Z", hash="")
    row[column] = value
    with pytest.raises(error):
        canonical_bytes(row)
    with pytest.raises(error):
        stored_values_hash((*(row[key] for key in CANONICAL_KEYS), row["hash"]))


def test_utc_text_remembers_instants_without_confusing_them() -> None:
    start = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    moments = [start + timedelta(microseconds=997 * n) for n in range(10_000)]  # > the memo
    expected = [m.isoformat(timespec="milliseconds").replace("+00:00", "Z") for m in moments]
    assert [utc_text(m) for m in moments] == expected
    assert [utc_text(m) for m in reversed(moments)] == expected[::-1]
    paris = timezone(timedelta(hours=1))
    assert utc_text(start.astimezone(paris)) == utc_text(start) == "2025-03-01T09:00:00.000Z"


KNOWN_RECORD = {
    "event_id": "evt-000042",
    "kind": "used",
    "subject_ref": "dfc79be63e696ad51820513df116f85b6ffc5a8d61638211a814869f37cd7bdd",
    "source": "billing",
    "categories": ["banking", "service_account"],
    "purpose": "billing",
    "purposes": [],
    "consent_granted": None,
    "recipient": None,
    "actor_role": "billing_clerk",
    "decision": "allow",
    "reason_code": "allowed",
    "rule": "roles.billing_clerk (INFORMATION USE)",
    "policy_version": "2025-01",
    "occurred_at": datetime(2025, 3, 1, 9, 42, tzinfo=UTC),
    "decided_at": datetime(2025, 3, 1, 9, 42, 0, 40000, tzinfo=UTC),
    "source_partition": 2,
    "source_offset": 42,
    "erasure": None,
}


def test_the_hash_of_a_known_record_never_changes() -> None:
    """A change here breaks every existing ledger: it needs a new encoding version."""
    row = decision_row(KNOWN_RECORD)
    row.update(seq=1, prev_hash=GENESIS_HASH, recorded_at="2025-03-01T10:00:00.000Z")
    assert canonical_bytes(row).startswith(
        b'{"actor_role":"billing_clerk","categories":["banking","service_account"],'
        b'"consent_granted":null,"decided_at":"2025-03-01T09:42:00.040Z","decision":"allow",'
    )
    assert row_hash(row) == "b66f617a3ef28fd62511b9dc464be1c3a683aa347b3fe45ddea906b47195bd27"


def test_the_encoding_covers_exactly_the_fields_of_the_decision_schema() -> None:
    schema = json.loads((SCHEMA_DIR / "lifecycle.Decision.avsc").read_text())
    assert {field["name"] for field in schema["fields"]} == set(DECISION_FIELDS)


@given(st.datetimes(timezones=st.just(UTC)))
def test_utc_text_is_the_isoformat_text_of_any_instant(moment: datetime) -> None:
    assert utc_text(moment) == moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def test_chained_rows_carry_the_hash_of_their_canonical_bytes() -> None:
    """The append path's encoding (a copy of the row, keys sorted by orjson) against the
    key-by-key one, over verdicts, consents and erasures."""
    decisions = [
        make_decision(1, consent_granted=True),
        make_decision(2, consent_granted=False, purpose="billing"),
        erasure_decision(3),
        make_decision(4, categories=["name", '\u00e9t\u00e9 "quoted"\n']),
    ]
    rows = [decision_row(decision) for decision in decisions]
    digests: list[bytes] = []
    head = chain_rows(rows, 7, GENESIS_HASH, "2025-03-01T10:00:00.000Z", digests)
    assert head == (11, rows[-1]["hash"])
    for row, digest in zip(rows, digests, strict=True):
        assert row["hash"] == row_hash(row) == digest.hex()
    assert [row["prev_hash"] for row in rows[1:]] == [row["hash"] for row in rows[:-1]]


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2025, 3, 1, 9, 30, 0, 125999, tzinfo=UTC), "2025-03-01T09:30:00.125Z"),
        (
            datetime(2025, 3, 1, 10, 30, tzinfo=timezone(timedelta(hours=1))),
            "2025-03-01T09:30:00.000Z",
        ),
        (datetime(999, 1, 2, tzinfo=UTC), "0999-01-02T00:00:00.000Z"),
    ],
)
def test_timestamps_are_utc_text_with_milliseconds(moment: datetime, text: str) -> None:
    assert utc_text(moment) == text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("occurred_at", datetime(2025, 3, 1, 9, 0)),  # naive
        ("decision", "maybe"),
        ("event_id", ""),
        ("categories", "banking"),
        ("source_offset", "12"),
        ("consent_granted", "yes"),
        ("erasure", {"request_id": "r"}),
    ],
)
def test_a_malformed_decision_is_refused_naming_its_index_and_field(field: str, value: Any) -> None:
    sink = MemoryAuditSink()
    batch = [make_decision(1), make_decision(2, **{field: value})]
    with pytest.raises(InvalidDecisionError) as refused:
        sink.append(batch)
    assert refused.value.index == 1
    assert refused.value.field.split(".")[0] == field
    assert sink.entries == []  # nothing of the batch was written


def test_a_missing_field_is_refused() -> None:
    decision = make_decision(1)
    del decision["policy_version"]
    with pytest.raises(InvalidDecisionError, match="policy_version: missing"):
        decision_row(decision)


# --------------------------------------------------------------------------- follower


def test_follower_verifies_records_published_through_avro() -> None:
    codec = SingleObjectCodec()
    records = _records(20)
    decoded = [
        codec.decode("lifecycle.AuditRecord", codec.encode("lifecycle.AuditRecord", r))
        for r in records
    ]
    follower = ChainFollower()
    verified = [r["seq"] for record in decoded for r in follower.feed(record)]
    report = follower.finish()
    assert report.ok, report.problem
    assert verified == list(range(1, 21))
    assert report.head_hash == records[-1]["hash"]


def test_follower_ignores_duplicates_with_the_same_hash() -> None:
    records = _records(10)
    follower = ChainFollower()
    for record in records[:6] + records[2:10] + records[9:]:
        follower.feed(record)
    report = follower.finish()
    assert report.ok
    assert (report.records, follower.duplicates) == (10, 5)


def test_follower_accepts_out_of_order_delivery_within_its_window() -> None:
    records = _records(50)
    shuffled = records[:]
    random.Random(5).shuffle(shuffled)
    follower = ChainFollower(window=50)
    for record in shuffled:
        follower.feed(record)
    assert follower.finish().ok
    assert follower.verified == 50


def test_follower_reports_a_gap_once_the_window_is_passed() -> None:
    records = _records(30)
    follower = ChainFollower(window=5)
    for record in records[:10] + records[11:17]:
        follower.feed(record)
    assert follower.problem is not None
    assert follower.problem.seq == 11
    assert "missing" in follower.problem.message


def test_follower_reports_a_gap_left_at_the_end_of_the_stream() -> None:
    records = _records(10)
    follower = ChainFollower()
    for record in records[:4] + records[5:]:
        follower.feed(record)
    report = follower.finish()
    assert (report.ok, report.first_bad_seq, report.records) == (False, 5, 4)


def test_follower_locates_a_tampered_record() -> None:
    records = _records(10)
    records[6]["decision"]["decision"] = (
        "allow" if records[6]["decision"]["decision"] == "deny" else "deny"
    )
    follower = ChainFollower()
    for record in records:
        follower.feed(record)
    report = follower.finish()
    assert (report.ok, report.first_bad_seq) == (False, 7)
    assert "altered" in (report.problem or "")


def test_follower_reports_a_redelivery_with_different_content() -> None:
    records = _records(5)
    forged = {**records[2], "decision": {**records[2]["decision"], "reason_code": "allowed!"}}
    follower = ChainFollower()
    for record in [*records, forged]:
        follower.feed(record)
    report = follower.finish()
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert "different content" in (report.problem or "")


def test_follower_names_an_inserted_record() -> None:
    records = _records(6)
    intruder_row = decision_row(make_decision(99))
    intruder_row.update(seq=4, prev_hash=records[2]["hash"], recorded_at="2025-03-01T10:00:00.000Z")
    intruder = {
        "seq": 4,
        "prev_hash": records[2]["hash"],
        "hash": row_hash(intruder_row),
        "recorded_at": datetime(2025, 3, 1, 10, tzinfo=UTC),
        "decision": make_decision(99),
    }
    shifted = [{**r, "seq": r["seq"] + 1} for r in records[3:]]
    follower = ChainFollower()
    for record in [*records[:3], intruder, *shifted]:
        follower.feed(record)
    report = follower.finish()
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert "inserted" in (report.problem or "")


def test_follower_can_anchor_on_the_first_record_or_resume_after_a_known_one() -> None:
    records = _records(10)
    anchored = ChainFollower(anchor_on_first=True)
    for record in records[4:]:
        anchored.feed(record)
    assert anchored.finish().ok and anchored.verified == 6
    resumed = ChainFollower(start_seq=4, start_hash=records[3]["hash"])
    for record in records[4:]:
        resumed.feed(record)
    assert resumed.finish().ok
    wrong = ChainFollower(start_seq=4, start_hash=records[2]["hash"])
    for record in records[4:]:
        wrong.feed(record)
    assert wrong.finish().first_bad_seq == 4


def test_follower_reports_an_unreadable_record() -> None:
    records = _records(3)
    broken = {**records[1], "decision": {"event_id": "x"}}
    follower = ChainFollower()
    for record in [records[0], broken]:
        follower.feed(record)
    assert follower.problem is not None and follower.problem.seq == 2
