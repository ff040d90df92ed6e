"""SqlAuditSink on SQLite and PostgreSQL: the chain, exactly-once, append-only, many writers."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from audit_helpers import erasure_decision, execute, make_decision
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from core.db import make_engine
from sinks.canonical import GENESIS_HASH
from sinks.checkpoints import CheckpointSigner, load_signing_key
from sinks.exceptions import InvalidDecisionError, LedgerError, LedgerUnavailableError
from sinks.ledger import SqlAuditSink, count_records, iter_records, verify


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_appended_decisions_form_one_chain_that_verifies(
    engine: Engine, signer: CheckpointSigner
) -> None:
    sink = SqlAuditSink(engine, signer, checkpoint_every=10)
    first = sink.append([make_decision(n) for n in range(1, 8)])
    second = sink.append([make_decision(n) for n in range(8, 13)] + [erasure_decision(13)])
    entries = first + second
    assert [e.seq for e in entries] == list(range(1, 14))
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    sink.close()
    report = verify(engine, signer.public_key)
    assert report.ok, report.problem
    assert (report.records, report.head_seq, report.head_hash) == (13, 13, entries[-1].hash)
    assert report.signed_seq == 13  # close() signed the tail
    stored = list(iter_records(engine))
    assert stored == entries
    assert stored[-1].decision()["erasure"]["retained"][0]["category"] == "banking"


def test_entries_round_trip_the_decision(engine: Engine, signer: CheckpointSigner) -> None:
    decision = make_decision(3, consent_granted=True, purposes=["billing", "service_provision"])
    decision["occurred_at"] = decision["occurred_at"].replace(microsecond=123456)
    [entry] = SqlAuditSink(engine, signer).append([decision])
    back = entry.decision()
    assert back["occurred_at"] == decision["occurred_at"].replace(microsecond=123000)
    assert {k: v for k, v in back.items() if k != "occurred_at"} == {
        k: v for k, v in decision.items() if k != "occurred_at"
    }
    [stored] = list(iter_records(engine))
    assert stored.decision() == back
    assert stored.as_audit_record()["recorded_at"] == entry.recorded_at


def test_a_redelivered_decision_adds_nothing_and_gets_its_stored_entry(
    engine: Engine, signer: CheckpointSigner
) -> None:
    sink = SqlAuditSink(engine, signer, checkpoint_every=3)
    original = sink.append([make_decision(n) for n in range(1, 6)])
    again = sink.append([make_decision(4), make_decision(6), make_decision(2), make_decision(6)])
    assert [e.seq for e in again] == [4, 6, 2, 6]
    assert again[0] == original[3] and again[2] == original[1]
    altered = sink.append([make_decision(5, reason_code="allowed-on-retry")])
    assert altered == [original[4]]  # the first record of an event wins
    assert sink.append([]) == []
    assert count_records(engine) == 6
    assert verify(engine, signer.public_key).ok


def test_a_malformed_decision_writes_nothing_of_its_batch(
    engine: Engine, signer: CheckpointSigner
) -> None:
    sink = SqlAuditSink(engine, signer)
    with pytest.raises(InvalidDecisionError) as refused:
        sink.append([make_decision(1), make_decision(2, occurred_at="yesterday")])
    assert (refused.value.index, refused.value.event_id) == (1, "evt-000002")
    assert count_records(engine) == 0


def test_checkpoints_every_n_records_and_every_t_seconds(
    engine: Engine, signer: CheckpointSigner
) -> None:
    clock = FakeClock()
    sink = SqlAuditSink(engine, signer, checkpoint_every=5, checkpoint_interval=30, clock=clock)
    sink.append([make_decision(1)])  # the first record is signed at once
    assert sink.last_checkpoint is not None and sink.last_checkpoint.seq == 1
    sink.append([make_decision(n) for n in range(2, 5)])  # 3 more, 0 s later: not due
    assert sink.last_checkpoint.seq == 1
    sink.append([make_decision(n) for n in range(5, 8)])  # 6 since the last: due
    assert sink.last_checkpoint.seq == 7
    clock.advance(29)
    sink.append([make_decision(8)])
    assert sink.last_checkpoint.seq == 7
    clock.advance(1)
    sink.append([make_decision(9)])  # 30 s since the last: due
    assert sink.last_checkpoint.seq == 9
    assert sink.checkpoint(only_if_due=True) is None
    sink.append([make_decision(10)])
    clock.advance(31)
    due = sink.checkpoint(only_if_due=True)  # a worker's timer signs an idle tail
    assert due is not None and due.seq == 10
    assert sink.checkpoint() == due  # nothing new: the latest checkpoint
    with engine.connect() as conn:
        seqs = conn.execute(text("SELECT seq FROM audit_checkpoints ORDER BY seq")).scalars().all()
    assert seqs == [1, 7, 9, 10]
    report = verify(engine, signer.public_key)
    assert (report.ok, report.checkpoints, report.signed_seq) == (True, 4, 10)


def test_an_empty_ledger_verifies_and_has_nothing_to_sign(
    engine: Engine, signer: CheckpointSigner
) -> None:
    sink = SqlAuditSink(engine, signer)
    assert sink.checkpoint() is None
    assert sink.head() == (0, GENESIS_HASH)
    sink.close()
    assert verify(engine, signer.public_key).ok


@pytest.mark.parametrize("table", ["audit_ledger", "audit_checkpoints"])
def test_update_and_delete_are_refused_by_the_database(
    engine: Engine, signer: CheckpointSigner, table: str
) -> None:
    sink = SqlAuditSink(engine, signer)
    sink.append([make_decision(n) for n in range(1, 4)])
    sink.checkpoint()
    column = "rule" if table == "audit_ledger" else "signed_at"
    with pytest.raises(DBAPIError, match="append-only"):
        execute(engine, f"UPDATE {table} SET {column} = 'x' WHERE seq >= 1")
    with pytest.raises(DBAPIError, match="append-only"):
        execute(engine, f"DELETE FROM {table} WHERE seq >= 1")
    if engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            execute(engine, f"TRUNCATE {table}")
    assert verify(engine, signer.public_key).ok


def test_create_all_is_idempotent_and_keeps_the_chain(
    engine: Engine, signer: CheckpointSigner
) -> None:
    SqlAuditSink(engine, signer).append([make_decision(1), make_decision(2)])
    sink = SqlAuditSink(engine, signer)
    sink.create_all()
    assert [e.seq for e in sink.append([make_decision(3)])] == [3]
    assert verify(engine, signer.public_key).ok


def test_a_locked_or_unreachable_database_is_reported_as_unavailable(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    engine = make_engine(url)
    sink = SqlAuditSink(engine, signer)
    sink.append([make_decision(1)])
    impatient = SqlAuditSink(
        create_engine(url, connect_args={"timeout": 0.1}), signer, create=False
    )
    with engine.connect() as holder:
        holder.exec_driver_sql("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(LedgerUnavailableError, match="unavailable"):
            impatient.append([make_decision(2)])
        holder.rollback()
    assert [e.seq for e in impatient.append([make_decision(2)])] == [2]  # nothing was lost
    gone = SqlAuditSink(
        create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"), signer, create=False
    )
    with pytest.raises(LedgerUnavailableError):
        gone.append([make_decision(3)])
    assert verify(engine, signer.public_key).ok


def test_a_database_error_in_the_batch_insert_writes_nothing_and_is_a_ledger_error(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    # SQLite's batch insert runs on the driver's own cursor: its errors must still come out as
    # the ledger's, with the transaction rolled back
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    sink = SqlAuditSink(engine, signer)
    sink.append([make_decision(1)])
    execute(
        engine,
        "CREATE TRIGGER refuse_seven BEFORE INSERT ON audit_ledger "
        "WHEN NEW.event_id = 'evt-000007' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    with pytest.raises(LedgerError, match="append failed: IntegrityError: refused") as failed:
        sink.append([make_decision(n) for n in range(5, 10)])
    assert not isinstance(failed.value, LedgerUnavailableError)
    assert [e.seq for e in iter_records(engine)] == [1]
    execute(engine, "DROP TRIGGER refuse_seven")
    assert [e.seq for e in sink.append([make_decision(n) for n in range(5, 10)])] == [2, 3, 4, 5, 6]
    assert verify(engine, signer.public_key).ok
    engine.dispose()


# --------------------------------------------------------------------------- many writers


def _worker(
    url: str, key_file: str, first: int, last: int, batch: int, go: Any, spans: Any
) -> None:
    """One worker process: appends decisions first..last in batches, once all are ready."""
    engine = make_engine(url)
    sink = SqlAuditSink(engine, load_signing_key(Path(key_file)), checkpoint_every=25)
    numbers = list(range(first, last + 1))
    go.wait(120)
    began = time.time()
    for start in range(0, len(numbers), batch):
        sink.append([make_decision(n) for n in numbers[start : start + batch]])
    spans.put((began, time.time()))
    sink.close()
    engine.dispose()


def test_two_worker_processes_build_one_valid_chain_with_every_event_once(
    db_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "signing.key"
    signer = load_signing_key(key_file)
    spawn = multiprocessing.get_context("spawn")
    go, spans = spawn.Barrier(3), spawn.Queue()
    # their ranges overlap on 151..250: a rebalance redelivers those to the other worker
    workers = [
        spawn.Process(target=_worker, args=(db_url, str(key_file), 1, 250, 3, go, spans)),
        spawn.Process(target=_worker, args=(db_url, str(key_file), 151, 400, 5, go, spans)),
    ]
    for worker in workers:
        worker.start()
    go.wait(180)
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    engine = make_engine(db_url)
    try:
        report = verify(engine, signer.public_key)
        assert report.ok, report.problem
        event_ids = [entry.event_id for entry in iter_records(engine)]
        assert sorted(event_ids) == [f"evt-{n:06d}" for n in range(1, 401)]
        assert report.records == 400 and report.checkpoints >= 2
        (start_a, end_a), (start_b, end_b) = spans.get(timeout=5), spans.get(timeout=5)
        assert start_a < end_b and start_b < end_a  # they really appended at the same time
    finally:
        engine.dispose()


def _slow_worker(url: str, key_file: str) -> None:
    engine = make_engine(url)
    sink = SqlAuditSink(engine, load_signing_key(Path(key_file)), checkpoint_every=40)
    for start in range(1, 2001, 20):
        sink.append([make_decision(n) for n in range(start, start + 20)])


def test_a_worker_killed_mid_batch_and_restarted_leaves_each_event_once(
    db_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "signing.key"
    signer = load_signing_key(key_file)
    SqlAuditSink(make_engine(db_url), signer).create_all()
    worker = multiprocessing.get_context("spawn").Process(
        target=_slow_worker, args=(db_url, str(key_file))
    )
    worker.start()
    engine = make_engine(db_url)
    try:
        deadline = time.monotonic() + 30
        while count_records(engine) < 200 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        assert worker.exitcode == -signal.SIGKILL
        survived = count_records(engine)
        assert 200 <= survived < 2000 and survived % 20 == 0  # whole batches, nothing partial
        assert verify(engine, signer.public_key).ok
        # restarted from the last committed offset or earlier: everything is redelivered
        restarted = SqlAuditSink(engine, signer, checkpoint_every=40)
        for start in range(1, 2001, 50):
            restarted.append([make_decision(n) for n in range(start, start + 50)])
        restarted.close()
        report = verify(engine, signer.public_key)
        assert report.ok, report.problem
        assert report.records == count_records(engine) == 2000
        assert len({entry.event_id for entry in iter_records(engine)}) == 2000
    finally:
        engine.dispose()
