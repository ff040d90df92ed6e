"""MemoryAuditSink: the in-memory double keeps the same promises as the database sink."""

from __future__ import annotations

import pytest
from audit_helpers import make_decision

from sinks.canonical import GENESIS_HASH
from sinks.checkpoints import CheckpointSigner
from sinks.exceptions import LedgerError
from sinks.ledger import AuditSink
from sinks.memory import MemoryAuditSink


def test_memory_sink_chains_deduplicates_and_verifies() -> None:
    memory = MemoryAuditSink(checkpoint_every=4)
    sink: AuditSink = memory  # it is an AuditSink (checked by mypy)
    first = sink.append([make_decision(n) for n in range(1, 6)])
    again = sink.append([make_decision(3), make_decision(6), make_decision(6)])
    assert [e.seq for e in first] == [1, 2, 3, 4, 5]
    assert first[0].prev_hash == GENESIS_HASH
    assert [e.seq for e in again] == [3, 6, 6]
    assert [c.seq for c in memory.checkpoints] == [5]
    sink.close()
    assert [c.seq for c in memory.checkpoints] == [5, 6]
    report = memory.verify()
    assert report.ok and report.records == 6 and report.signed_seq == 6


def test_memory_sink_verify_catches_a_forged_checkpoint_and_a_wrong_key() -> None:
    sink = MemoryAuditSink(checkpoint_every=2)
    sink.append([make_decision(n) for n in range(1, 5)])
    assert not sink.verify(CheckpointSigner.generate().public_key).ok
    sink.checkpoints[0] = CheckpointSigner.generate().sign(
        4, sink.entries[3].hash, sink.entries[3].recorded_at
    )
    report = sink.verify()
    assert (report.ok, report.first_bad_seq) == (False, 4)


def test_a_closed_memory_sink_refuses_appends() -> None:
    sink = MemoryAuditSink()
    sink.close()
    with pytest.raises(LedgerError, match="closed"):
        sink.append([make_decision(1)])
