"""AuditRecordReader, the fast path of ``audit replay``: whatever it reads, it reads exactly as
the codec, ``audit_record_row``, ``canonical_bytes`` and ``replay_line`` do; everything else it
declines."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from audit_helpers import erasure_decision, make_decision

from sinks.canonical import canonical_bytes, row_hash
from sinks.memory import MemoryAuditSink
from sinks.replay import AUDIT_RECORD_FINGERPRINT, AuditRecordReader, replay_line
from sinks.stored import audit_record_row
from streams.codec import SingleObjectCodec
from streams.exceptions import DecodeError

CODEC = SingleObjectCodec()


def _encoded(decisions: list[dict[str, Any]]) -> list[bytes]:
    sink = MemoryAuditSink()
    return [
        CODEC.encode("lifecycle.AuditRecord", entry.as_audit_record())
        for entry in sink.append(decisions)
    ]


def _reference(value: bytes) -> tuple[bytes, int, str, str, str] | None:
    """What replay's codec path makes of ``value`` (None: not decodable or not a record)."""
    try:
        record = CODEC.decode("lifecycle.AuditRecord", value)
        row = audit_record_row(record)
    except (DecodeError, ValueError):
        return None
    line = replay_line(canonical_bytes(row), row["hash"])
    return line, row["seq"], row["prev_hash"], row["hash"], row_hash(row)


def _same(read: tuple[bytes, int, str, str, str], value: bytes) -> None:
    reference = _reference(value)
    assert reference is not None
    assert read == reference


def test_a_line_is_the_record_with_its_hash_and_utc_text_times() -> None:
    [value] = _encoded([make_decision(1)])
    read = AuditRecordReader().read(value)
    assert read is not None
    line = orjson.loads(read[0])
    record = CODEC.decode("lifecycle.AuditRecord", value)
    assert line["seq"] == record["seq"] and line["hash"] == record["hash"] == read[3]
    assert line["event_id"] == record["decision"]["event_id"]
    assert line["occurred_at"].endswith("Z") and line["erasure"] is None
    assert list(line)[-1] == "hash"


VARIED = [
    make_decision(1),
    make_decision(2, consent_granted=True, purposes=["billing", "service_provision"]),
    make_decision(3, consent_granted=False, recipient="authorities", actor_role=None),
    make_decision(4, purpose=None, categories=[], rule="r" * 63),
    make_decision(5, rule="a rule of more than sixty-four bytes, " * 5, source_offset=2**40),
    make_decision(6, source_partition=-1, source_offset=-1, kind="retention_sweep"),
    make_decision(7, occurred_at=datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    make_decision(8, occurred_at=datetime(999, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)),
    make_decision(9, occurred_at=datetime(2112, 9, 3, 0, 0, tzinfo=UTC)),
    make_decision(10, decided_at=datetime(2026, 1, 1, tzinfo=UTC) - timedelta(milliseconds=1)),
    make_decision(11, categories=["name"] * 63, purposes=["billing"] * 2),
]


def test_the_reader_was_written_for_the_current_audit_record_schema() -> None:
    # A schema change must revisit AuditRecordReader (and the canonical encoding's version)
    assert CODEC.writer_fingerprint("lifecycle.AuditRecord") == AUDIT_RECORD_FINGERPRINT


def test_records_are_read_exactly_as_the_codec_path_reads_them() -> None:
    reader = AuditRecordReader()
    for value in _encoded(VARIED * 2):  # twice: remembered instants too
        read = reader.read(value)
        assert read is not None
        _same(read, value)


@pytest.mark.parametrize(
    "decision",
    [
        erasure_decision(1),
        make_decision(1, rule="règle"),
        make_decision(1, kind="u" * 64),
        make_decision(1, event_id="e" * 100),
        make_decision(1, recipient="\u2028"),
        make_decision(1, categories=["name"] * 64),
    ],
    ids=[
        "erasure",
        "non-ascii",
        "64-byte-kind",
        "long-event-id",
        "non-ascii-recipient",
        "64-items",
    ],
)
def test_what_the_reader_leaves_to_the_codec_is_declined(decision: dict[str, Any]) -> None:
    [value] = _encoded([decision])
    assert AuditRecordReader().read(value) is None
    assert _reference(value) is not None  # ... and the codec path reads it


def test_foreign_truncated_and_padded_values_are_declined() -> None:
    [value] = _encoded([make_decision(1)])
    reader = AuditRecordReader()
    decision = CODEC.encode("lifecycle.Decision", make_decision(1))
    for bad in (decision, value[:-1], value + b"\x00", value[:40], b"", b"\xc3\x01"):
        assert reader.read(bad) is None


def test_a_corrupted_record_is_declined_or_read_as_the_codec_path_reads_it() -> None:
    reader = AuditRecordReader()
    rng = random.Random(11)
    values = _encoded(VARIED)
    read_some = 0
    for _ in range(3000):
        value = bytearray(rng.choice(values))
        for _ in range(rng.randint(1, 3)):
            value[rng.randrange(10, len(value))] = rng.randrange(256)
        read = reader.read(bytes(value))
        if read is not None:
            _same(read, bytes(value))
            read_some += 1
    assert read_some > 100  # most flips land in text, which still reads
