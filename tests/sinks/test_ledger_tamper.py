"""verify() against an attacker with database access: every tamper is detected and located.

Each case first drops the append-only triggers (as such an attacker would), then edits.
The ledger: 60 records appended 5 at a time, a checkpoint every 10 records, so checkpoints
sit at seq 5, 15, 25, 35, 45, 55 and 60 (the last signed on close).

Each tamper is also found by helper processes checking ranges of 2, 4 and 8 records (so that
the tampered record, or the checkpoint, is the first of a range, the last of one, or inside
one), with the report of a single pass.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from audit_helpers import (
    drop_event_id_uniqueness,
    drop_triggers,
    execute,
    insert_row,
    make_decision,
    rehash,
    shift_seqs,
    stored_row,
)
from sqlalchemy import Engine

from sinks.canonical import row_hash
from sinks.checkpoints import CheckpointSigner
from sinks.entry import AuditEntry
from sinks.ledger import SqlAuditSink, verify
from sinks.range_check import RangeResult
from sinks.stored import decision_row

ledger_verify = importlib.import_module("sinks.ledger.verify")  # the module, not the function


@dataclass
class Ledger:
    engine: Engine
    signer: CheckpointSigner
    entries: list[AuditEntry]


@pytest.fixture
def ledger(engine: Engine, signer: CheckpointSigner) -> Ledger:
    sink = SqlAuditSink(engine, signer, checkpoint_every=10)
    entries = []
    for start in range(1, 61, 5):
        entries += sink.append([make_decision(n) for n in range(start, start + 5)])
    sink.close()
    assert verify(engine, signer.public_key).ok
    drop_triggers(engine)
    return Ledger(engine, signer, entries)


def change_a_field(ledger: Ledger, seq: int = 23) -> None:
    execute(
        ledger.engine,
        "UPDATE audit_ledger SET decision = "
        "CASE decision WHEN 'allow' THEN 'deny' ELSE 'allow' END WHERE seq = :seq",
        seq=seq,
    )


def change_a_field_and_its_hash(ledger: Ledger) -> None:
    change_a_field(ledger)
    rehash(ledger.engine, 23)


def change_a_signed_record_and_its_hash(ledger: Ledger) -> None:
    change_a_field(ledger, seq=25)
    rehash(ledger.engine, 25)


def remove_a_record(ledger: Ledger) -> None:
    execute(ledger.engine, "DELETE FROM audit_ledger WHERE seq = 23")


def remove_a_record_and_renumber(ledger: Ledger) -> None:
    remove_a_record(ledger)
    shift_seqs(ledger.engine, 24, -1)


def insert_a_record(ledger: Ledger) -> None:
    shift_seqs(ledger.engine, 23, +1)
    forged = decision_row(make_decision(999))
    forged.update(seq=23, prev_hash=ledger.entries[21].hash, recorded_at="2025-03-01T10:00:00.000Z")
    forged["hash"] = row_hash(forged)  # the attacker knows the (public) encoding
    insert_row(ledger.engine, forged)


def swap_a_pair(ledger: Ledger) -> None:
    execute(ledger.engine, "UPDATE audit_ledger SET seq = -1 WHERE seq = 23")
    execute(ledger.engine, "UPDATE audit_ledger SET seq = 23 WHERE seq = 24")
    execute(ledger.engine, "UPDATE audit_ledger SET seq = 24 WHERE seq = -1")


def rewrite_the_chain_from_a_record(ledger: Ledger) -> None:
    change_a_field(ledger)
    previous = ledger.entries[21].hash
    for seq in range(23, 61):
        previous = rehash(ledger.engine, seq, prev_hash=previous)
    execute(ledger.engine, "UPDATE audit_chain_head SET hash = :h", h=previous)


def record_an_event_twice(ledger: Ledger) -> None:
    """A well-chained record at the tail (after the last checkpoint) repeating event 12."""
    drop_event_id_uniqueness(ledger.engine)
    again = decision_row(make_decision(12))
    again.update(seq=61, prev_hash=ledger.entries[59].hash, recorded_at="2025-03-01T10:00:00.000Z")
    again["hash"] = row_hash(again)
    insert_row(ledger.engine, again)
    execute(ledger.engine, "UPDATE audit_chain_head SET seq = 61, hash = :h", h=again["hash"])


def cut_off_the_tail(ledger: Ledger) -> None:
    execute(ledger.engine, "DELETE FROM audit_ledger WHERE seq > 57")
    execute(
        ledger.engine, "UPDATE audit_chain_head SET seq = 57, hash = :h", h=ledger.entries[56].hash
    )


def forge_a_checkpoint_signature(ledger: Ledger) -> None:
    execute(
        ledger.engine, "UPDATE audit_checkpoints SET signature = :s WHERE seq = 35", s="ab" * 64
    )


def sign_a_checkpoint_with_another_key(ledger: Ledger) -> None:
    other = CheckpointSigner.generate().sign(
        35, ledger.entries[34].hash, ledger.entries[34].recorded_at
    )
    execute(ledger.engine, "DELETE FROM audit_checkpoints WHERE seq = 35")
    _insert_checkpoint(
        ledger, other.seq, other.head_hash, other.signed_at, other.key_id, other.signature
    )


def sign_a_wrong_head(ledger: Ledger) -> None:
    bogus = ledger.signer.sign(30, "f" * 64, ledger.entries[29].recorded_at)
    _insert_checkpoint(
        ledger, bogus.seq, bogus.head_hash, bogus.signed_at, bogus.key_id, bogus.signature
    )


def _insert_checkpoint(ledger: Ledger, seq: int, head: str, at: str, key_id: str, sig: str) -> None:
    execute(
        ledger.engine,
        "INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, signature) "
        "VALUES (:seq, :head, :at, :key_id, :sig)",
        seq=seq,
        head=head,
        at=at,
        key_id=key_id,
        sig=sig,
    )


TAMPERS: list[tuple[Callable[[Ledger], None], int, str]] = [
    (change_a_field, 23, "record 23 was altered"),
    (change_a_field_and_its_hash, 23, "record 23 was rewritten"),
    (change_a_signed_record_and_its_hash, 25, "does not match the signed checkpoint at seq 25"),
    (remove_a_record, 23, "record 23 is missing"),
    (remove_a_record_and_renumber, 23, "record 23 was altered or moved here"),
    (insert_a_record, 23, "record 23 was inserted"),
    (swap_a_pair, 23, "record 23 was altered or moved here"),
    (rewrite_the_chain_from_a_record, 25, "back to seq 16 (the chain was re-hashed)"),
    (record_an_event_twice, 61, "record 61 repeats event 'evt-000012', already recorded at seq 12"),
    (cut_off_the_tail, 58, "records 58..60 were removed"),
    (forge_a_checkpoint_signature, 35, "checkpoint at seq 35 has an invalid signature"),
    (sign_a_checkpoint_with_another_key, 35, "not one of the given public keys"),
    (sign_a_wrong_head, 30, "signed over a wrong head"),
]


@pytest.mark.parametrize(
    ("tamper", "first_bad_seq", "problem"), TAMPERS, ids=[t[0].__name__ for t in TAMPERS]
)
def test_tampering_is_detected_and_located(
    ledger: Ledger, tamper: Callable[[Ledger], None], first_bad_seq: int, problem: str
) -> None:
    tamper(ledger)
    report = verify(ledger.engine, ledger.signer.public_key)
    assert not report.ok
    assert report.first_bad_seq == first_bad_seq, report.problem
    assert problem in (report.problem or "")
    assert f"TAMPERED at seq {first_bad_seq}" in report.summary()


@pytest.mark.parametrize("range_size", [2, 4, 8])
@pytest.mark.parametrize(
    ("tamper", "first_bad_seq", "problem"), TAMPERS, ids=[t[0].__name__ for t in TAMPERS]
)
def test_helpers_checking_ranges_find_what_one_pass_finds(
    ledger: Ledger,
    tamper: Callable[[Ledger], None],
    first_bad_seq: int,
    problem: str,
    range_size: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tamper(ledger)
    one_pass = verify(ledger.engine, ledger.signer.public_key, jobs=1)
    in_ranges_here = _count_ranges_checked_here(monkeypatch)
    report = verify(ledger.engine, ledger.signer.public_key, jobs=2, range_size=range_size)
    assert report == one_pass
    assert (report.ok, report.first_bad_seq) == (False, first_bad_seq)
    assert problem in (report.problem or "")
    assert in_ranges_here == [], "the helpers checked every range"


def test_helpers_verify_an_intact_ledger_with_its_tree_heads(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_pass = verify(ledger.engine, ledger.signer.public_key, jobs=1)
    in_ranges_here = _count_ranges_checked_here(monkeypatch)
    for range_size in (1, 2, 16, 32):
        report = verify(ledger.engine, ledger.signer.public_key, jobs=3, range_size=range_size)
        assert report == one_pass
        assert report.ok and (report.records, report.checkpoints) == (60, 7), report.summary()
    assert in_ranges_here == []


def test_ranges_a_helper_cannot_check_are_checked_here(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that cannot open the database (or dies) leaves its ranges to this process."""
    change_a_field(ledger, seq=44)
    one_pass = verify(ledger.engine, ledger.signer.public_key, jobs=1)
    monkeypatch.setattr(
        ledger_verify, "_helper_database", lambda _engine: {"sqlite": "/nonexistent/x/ledger"}
    )
    ranges_here = _count_ranges_checked_here(monkeypatch, call_through=True)
    report = verify(ledger.engine, ledger.signer.public_key, jobs=2, range_size=8)
    assert (report.ok, report.first_bad_seq) == (False, 44)
    assert report == one_pass
    assert len(ranges_here) == 6  # 1..8 to 41..48: the range of seq 44 is the last needed


def test_without_helpers_this_process_checks_alone(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    change_a_field(ledger, seq=44)
    one_pass = verify(ledger.engine, ledger.signer.public_key, jobs=1)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # no helper can start
    assert verify(ledger.engine, ledger.signer.public_key, jobs=2, range_size=8) == one_pass


def _count_ranges_checked_here(
    monkeypatch: pytest.MonkeyPatch, *, call_through: bool = False
) -> list[int]:
    """The first seqs of the ranges this process checks itself (helpers are other processes)."""
    seen: list[int] = []
    check_range = ledger_verify.check_range

    def counted(rows: Any, first_seq: int, *args: Any, **kwargs: Any) -> RangeResult:
        seen.append(first_seq)
        if not call_through:
            raise AssertionError("a range was checked in this process")
        return check_range(rows, first_seq, *args, **kwargs)

    monkeypatch.setattr(ledger_verify, "check_range", counted)
    return seen


def test_a_corrupt_column_is_reported_not_crashed_on(ledger: Ledger) -> None:
    if ledger.engine.dialect.name == "sqlite":
        execute(ledger.engine, "UPDATE audit_ledger SET consent_granted = 7 WHERE seq = 12")
    else:
        execute(ledger.engine, "ALTER TABLE audit_ledger ALTER COLUMN categories DROP NOT NULL")
        execute(ledger.engine, "UPDATE audit_ledger SET categories = NULL WHERE seq = 12")
    report = verify(ledger.engine, ledger.signer.public_key)
    assert (report.ok, report.first_bad_seq) == (False, 12)
    assert "cannot be encoded" in (report.problem or "")


def test_verifying_with_another_public_key_fails_at_the_first_checkpoint(ledger: Ledger) -> None:
    report = verify(ledger.engine, CheckpointSigner.generate().public_key)
    assert (report.ok, report.first_bad_seq) == (False, 5)


def test_verify_accepts_several_keys_after_a_rotation(ledger: Ledger) -> None:
    rotated = CheckpointSigner.generate()
    sink = SqlAuditSink(ledger.engine, rotated, create=False)
    sink.append([make_decision(n) for n in range(61, 66)])
    sink.close()
    assert not verify(ledger.engine, rotated.public_key).ok
    report = verify(ledger.engine, [ledger.signer.public_key, rotated.public_key])
    assert report.ok and report.signed_seq == 65


def test_an_untampered_copy_still_verifies_with_triggers_dropped(ledger: Ledger) -> None:
    assert verify(ledger.engine, ledger.signer.public_key).ok
    assert stored_row(ledger.engine, 60)["hash"] == ledger.entries[-1].hash
