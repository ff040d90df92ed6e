"""Fault 4: the ledger database is unavailable for a while, with events waiting to be decided.

* PostgreSQL (``LIFECYCLE_DB_URL``): the server is shut down (``pg_ctl stop -m fast``) while the
  workers process a backlog, and started again later.
* SQLite (the default): another connection holds ``BEGIN EXCLUSIVE`` for longer than the
  workers' busy timeout (30 s), so their writes fail with "database is locked".

During the outage no offset may be committed past what is durable: every decision below the
group's committed offset of ``privacy.decisions`` is in the ledger (and was stored before the
outage began), and every event below the committed offset of ``customer.events`` has its
decision on ``privacy.decisions``. Afterwards nothing is lost or duplicated, and the workers
must have ridden the outage out (no exit), as the ledger stage does: a worker that exited is
restarted once the database is back (as a supervisor would), so that the check of durability
and loss still runs, and the test then fails naming the exit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faults.harness import (
    StoppablePostgres,
    fault_seed,
    scaled,
    settle_and_check,
    traffic_stream,
)
from faults.invariants import CODEC, committed_offsets, ledger_rows, read_all

from sinks.stored import utc_text
from streams.topics import CUSTOMER_EVENTS, DECISIONS

from fixtures.broker import WorkerProcess, Workers, run_cli

EVENTS = scaled(8_000, 60_000)
PG_OUTAGE = scaled(10, 30)
SQLITE_LOCK = scaled(35, 90)  # beyond the 30 s busy timeout: writes fail, not just wait


def decisions_below(bootstrap: str, committed: dict[int, int]) -> dict[str, tuple[int, int]]:
    """event_id -> (partition, offset) of every decision the group committed past."""
    below = {}
    for message in read_all(bootstrap, DECISIONS).messages:
        if message.offset() < committed.get(message.partition(), 0):
            decision = CODEC.decode("lifecycle.Decision", message.value() or b"")
            below[decision["event_id"]] = (message.partition(), message.offset())
    return below


def events_committed_without_a_decision(bootstrap: str) -> list[tuple[int, int]]:
    """Offsets of customer.events the group committed whose decision is not on the bus."""
    committed = committed_offsets(bootstrap, CUSTOMER_EVENTS, range(4))
    decided = set()
    for message in read_all(bootstrap, DECISIONS).messages:
        decision = CODEC.decode("lifecycle.Decision", message.value() or b"")
        decided.add((decision["source_partition"], decision["source_offset"]))
    return sorted(
        (p, o) for p, end in committed.items() for o in range(end) if (p, o) not in decided
    )


def ride_out(
    workers: list[WorkerProcess], seconds: float, probe: Callable[[], None] | None = None
) -> tuple[int, list[str]]:
    """Wait ``seconds``, calling ``probe`` every few seconds; the number of probes and how each
    worker that exited meanwhile ended (the last lines of its log)."""
    probes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
        if probe is not None:
            probe()
            probes += 1
    exits = [
        f"exit {worker.process.returncode}: "
        + " / ".join(line[:300] for line in worker.log().splitlines()[-2:])
        for worker in workers
        if worker.process.poll() is not None
    ]
    return probes, exits


def restart_exited(workers: Workers, running: list[WorkerProcess]) -> list[WorkerProcess]:
    """What a supervisor does once the database is back: replace every worker that exited."""
    return [worker if worker.process.poll() is None else workers.start() for worker in running]


def wait_for_first_commit(bootstrap: str, timeout: float = 60.0) -> dict[int, int]:
    """Wait until the ledger stage committed some decisions (part of the backlog is durable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed = committed_offsets(bootstrap, DECISIONS, range(4))
        if sum(committed.values()):
            return committed
        time.sleep(0.2)
    raise AssertionError(f"no decision committed within {timeout:.0f}s")


def start_backlog(
    workers: Workers, env: dict[str, str], seed: int
) -> tuple[list[WorkerProcess], object]:
    """Two workers, and a stream published up front (it takes them seconds to work through)."""
    stream = traffic_stream(EVENTS, erasures=scaled(8, 30), seed=seed)
    running = [workers.start()]
    running[0].wait_for_log("Worker ready", 60)  # it made the keys: the second only reads them
    running.append(workers.start())
    document = b"".join(stream.chunks(1))
    published = run_cli(env, "publish", "-", stdin=document, timeout=300)
    assert published.returncode == 0, published.stderr.decode()[-2000:]
    return running, stream


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_postgres_stopped_mid_stream_commits_nothing_early_and_loses_nothing(
    workers: Workers,
    lifecycle_env: dict[str, str],
    broker: str,
    stoppable_postgres: StoppablePostgres,
) -> None:
    env = {**lifecycle_env, "LIFECYCLE_DB_URL": stoppable_postgres.url}
    workers.env = env
    seed = fault_seed()
    print(f"\n[postgres outage] seed {seed}: {EVENTS} events, server down {PG_OUTAGE}s")
    running, stream = start_backlog(workers, env, seed)

    wait_for_first_commit(broker)  # part of the backlog is in the ledger, most is not
    stoppable_postgres.stop()
    stopped_at = utc_text(datetime.now(UTC))
    committed: dict[int, int] = {}

    def sample() -> None:
        committed.update(committed_offsets(broker, DECISIONS, range(4)))

    probes, exits = ride_out(running, PG_OUTAGE, sample)
    sample()
    stoppable_postgres.start()
    print(f"[postgres outage] {probes} probes; committed at its end: {committed}; exits: {exits}")
    running = restart_exited(workers, running)

    report = settle_and_check(
        broker,
        env,
        "postgres outage",
        published=stream.event_ids,
        expected_decisions=stream.expected,
    )
    recorded_at = {row["event_id"]: row["recorded_at"] for row in ledger_rows(env)}
    early = {
        event_id: position
        for event_id, position in decisions_below(broker, committed).items()
        if recorded_at.get(event_id, "9999") >= stopped_at
    }
    assert early == {}, f"offsets committed before their decision was durable: {early}"
    report.assert_holds()
    for worker in running:
        assert worker.process.poll() is None, f"a worker exited:\n{worker.log()[-3000:]}"
    assert exits == [], "workers died of the outage instead of waiting it out (nothing was lost)"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sqlite_locked_by_another_connection_commits_nothing_early_and_loses_nothing(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    seed = fault_seed()
    print(f"\n[sqlite lock] seed {seed}: {EVENTS} events, BEGIN EXCLUSIVE held {SQLITE_LOCK}s")
    running, stream = start_backlog(workers, lifecycle_env, seed)
    database = Path(lifecycle_env["LIFECYCLE_DATA_DIR"]) / "lifecycle.sqlite"

    wait_for_first_commit(broker)
    locker = sqlite3.connect(database, timeout=60, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    violations: list[str] = []

    def probe() -> None:
        # under the lock the ledger cannot change: what it holds now is all that is durable
        stored = {row[0] for row in locker.execute("SELECT event_id FROM audit_ledger")}
        committed = committed_offsets(broker, DECISIONS, range(4))
        early = set(decisions_below(broker, committed)) - stored
        if early:
            violations.append(f"{len(early)} decisions committed but not in the ledger")
        undecided = events_committed_without_a_decision(broker)
        if undecided:
            violations.append(f"events committed without a decision: {undecided[:5]}")

    try:
        probes, exits = ride_out(running, SQLITE_LOCK, probe)
    finally:
        locker.rollback()
        locker.close()
    print(f"[sqlite lock] {probes} probes during the lock; exits: {exits}")
    running = restart_exited(workers, running)
    assert violations == []

    report = settle_and_check(
        broker,
        lifecycle_env,
        "sqlite lock",
        published=stream.event_ids,
        expected_decisions=stream.expected,
    )
    report.assert_holds()
    for worker in running:
        assert worker.process.poll() is None, f"a worker exited:\n{worker.log()[-3000:]}"
    assert exits == [], "workers died of the lock instead of waiting it out (nothing was lost)"
