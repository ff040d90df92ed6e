"""Fault 7: an attacker with write access to the ledger database tampers with it.

The ledger is written by the real pipeline (a worker decides a stream, then stops cleanly and
signs its tail). For each mutation a fresh copy is made, the attacker drops the append-only
triggers (as anyone who can write the database can), changes it, and ``lifecycle audit verify``
must exit 1 naming the first record that may have been tampered with:

* change a field of a record (its hash left as it was) -> that record;
* change a field and recompute that record's hash -> that record (its successor no longer
  links to it), or the records since the last good checkpoint when a checkpoint signed it;
* rewrite a record and every hash after it, moving the chain head -> the records since the
  last checkpoint before it (the first signed checkpoint after it no longer matches);
* delete a record -> that record; delete the last records and move the head back -> the first
  one removed (a signed checkpoint covers it);
* insert a record after the head -> the inserted one; insert a record in the middle,
  renumbering the rest and chaining it correctly -> the inserted one;
* swap the seqs of two records -> the first of them;
* forge a checkpoint's signature, or point a checkpoint at another head -> that checkpoint.

Not detectable by design, so not tried: records appended (with the head moved) after the last
signed checkpoint; ``privacy.audit`` is the independent copy that shows those.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from faults.harness import fault_seed, scaled, traffic_stream
from faults.invariants import wait_until_settled
from sqlalchemy import create_engine, insert, select, update
from sqlalchemy.engine import Connection, make_url

from core.db import make_engine
from core.settings import load_settings
from sinks.canonical import CANONICAL_KEYS, row_hash
from sinks.ledger import (
    audit_chain_head,
    audit_checkpoints,
    audit_ledger,
    create_ledger,
    open_audit_sink,
)
from streams.broker import EmbeddedBroker
from streams.topic_admin import apply_topics

from fixtures.broker import Workers, run_cli

EVENTS = scaled(3_000, 20_000)
SQLITE_MUTATIONS = scaled(40, 400)
POSTGRES_MUTATIONS = scaled(18, 90)
TAMPERED = re.compile(r"TAMPERED at seq (\d+)")

APPEND_ONLY_TRIGGERS = {
    "sqlite": {
        "audit_ledger_no_update",
        "audit_ledger_no_delete",
        "audit_checkpoints_no_update",
        "audit_checkpoints_no_delete",
        "audit_chain_head_no_delete",
    },
    "postgresql": {
        "audit_ledger_append_only",
        "audit_ledger_no_truncate",
        "audit_checkpoints_append_only",
        "audit_checkpoints_no_truncate",
        "audit_chain_head_no_delete",
    },
}


# --------------------------------------------------------------------------- the ledger


@dataclass
class Ledger:
    """A ledger the pipeline wrote (SQLite file plus the signing key), never changed."""

    data_dir: Path
    env: dict[str, str]
    records: int
    checkpoints: list[int]

    def copy(self, destination: Path) -> dict[str, str]:
        """A copy of the data dir (SQLite ledger and keys); the environment that reads it."""
        shutil.copytree(self.data_dir, destination)
        return {**self.env, "LIFECYCLE_DATA_DIR": str(destination)}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """A stream decided by a real worker, which then stopped cleanly (signing its tail)."""
    tmp = tmp_path_factory.mktemp("ledger")
    with EmbeddedBroker() as embedded:
        apply_topics({"bootstrap.servers": embedded.bootstrap}, 4)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
        env.update(
            KAFKA_BOOTSTRAP=embedded.bootstrap,
            LIFECYCLE_DATA_DIR=str(tmp / "data"),
            LIFECYCLE_LOG_LEVEL="INFO",
            LIFECYCLE_METRICS_PORT="0",
            PYTHONUNBUFFERED="1",
        )
        pool = Workers(env, tmp)
        worker = pool.start()
        stream = traffic_stream(EVENTS, subjects=500, erasures=scaled(6, 20), seed=3)
        for chunk in stream.chunks(4):
            published = run_cli(env, "publish", "-", stdin=chunk)
            assert published.returncode == 0, published.stderr.decode()[-2000:]
        wait_until_settled(embedded.bootstrap, 120)
        assert worker.stop(signal.SIGTERM) == 0, worker.log()[-3000:]
    # sign the tail as SqlAuditSink.close() does (the worker does not call it when it stops)
    open_audit_sink(load_settings(env)).close()
    database = tmp / "data" / "lifecycle.sqlite"
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        records = conn.execute("SELECT count(*) FROM audit_ledger").fetchone()[0]
        checkpoints = [row[0] for row in conn.execute("SELECT seq FROM audit_checkpoints")]
    assert records == len(stream.events) and checkpoints and checkpoints[-1] == records
    verified = run_cli(env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return Ledger(tmp / "data", env, records, sorted(checkpoints))


# --------------------------------------------------------------------------- the attacker


def drop_triggers(conn: Connection) -> None:
    """What an attacker with write access does first: remove the append-only guards."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        found = {row[0]: None for row in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")}  # fmt: skip
        for name in found:
            conn.exec_driver_sql(f"DROP TRIGGER {name}")
    else:
        found = dict(conn.exec_driver_sql(
            "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal").all())  # fmt: skip
        for name, table in found.items():
            conn.exec_driver_sql(f"DROP TRIGGER {name} ON {table}")
    assert APPEND_ONLY_TRIGGERS[dialect] <= set(found), f"triggers were {sorted(found)}"


def row(conn: Connection, seq: int) -> dict[str, Any]:
    return dict(
        conn.execute(select(audit_ledger).where(audit_ledger.c.seq == seq)).mappings().one()
    )


def set_row(conn: Connection, seq: int, **values: Any) -> None:
    conn.execute(update(audit_ledger).where(audit_ledger.c.seq == seq).values(**values))


def rehash(conn: Connection, seq: int, prev_hash: str | None = None) -> str:
    """Recompute record ``seq``'s hash (and link it to ``prev_hash``), as the docs allow."""
    stored = row(conn, seq)
    if prev_hash is not None:
        stored["prev_hash"] = prev_hash
    stored["hash"] = row_hash(stored)
    set_row(conn, seq, prev_hash=stored["prev_hash"], hash=stored["hash"])
    return str(stored["hash"])


def move_head(conn: Connection, seq: int) -> None:
    head = row(conn, seq)["hash"] if seq else "0" * 64
    conn.execute(update(audit_chain_head).values(seq=seq, hash=head))


def altered(value: Any, column: str) -> Any:
    """A different value of the same type."""
    if column == "decision":
        return "deny" if value == "allow" else "allow"
    if column == "consent_granted":  # a boolean column, null for most kinds
        return True if value is None else not value
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "tampered"
    if column in ("occurred_at", "decided_at", "recorded_at"):
        return value.replace(value[:4], str(int(value[:4]) - 1).zfill(4), 1)
    if column in ("categories", "purposes"):
        return json.dumps([*json.loads(value), "banking"], separators=(",", ":"))
    return value[:-1] + ("x" if value[-1:] != "x" else "y")


class Mutations:
    """Random tampering of one ledger copy; each returns the seqs (low, high) between which
    verify must name the first bad record: one seq when it can be told exactly."""

    def __init__(self, rng: random.Random, records: int, checkpoints: list[int]) -> None:
        self.rng = rng
        self.records = records
        self.checkpoints = checkpoints

    def pick(self, low: int = 1, high: int | None = None) -> int:
        return self.rng.randint(low, high or self.records)

    def signed_range(self, seq: int) -> tuple[int, int]:
        """The records between the checkpoints around ``seq``: where a rewrite that re-hashed
        the chain is located (only the signature over the head can tell)."""
        low = max([c for c in self.checkpoints if c < seq], default=0) + 1
        return low, min(c for c in self.checkpoints if c >= seq)

    def change_a_field(self, conn: Connection) -> tuple[int, int]:
        seq = self.pick()
        column = self.rng.choice([c for c in CANONICAL_KEYS if c != "seq"] + ["hash"])
        set_row(conn, seq, **{column: altered(row(conn, seq)[column], column)})
        return seq, seq

    def change_and_rehash_the_record(self, conn: Connection) -> tuple[int, int]:
        seq = self.pick()
        set_row(conn, seq, reason_code="allowed", decision="allow", rule="tampered")
        rehash(conn, seq)
        return self.signed_range(seq) if seq in self.checkpoints else (seq, seq)

    def rewrite_the_tail(self, conn: Connection) -> tuple[int, int]:
        seq = self.pick(high=self.checkpoints[-1])
        set_row(conn, seq, decision="allow", reason_code="allowed", rule="tampered")
        previous = row(conn, seq - 1)["hash"] if seq > 1 else "0" * 64
        for each in range(seq, self.records + 1):
            previous = rehash(conn, each, previous)
        move_head(conn, self.records)
        return self.signed_range(seq)

    def delete_a_record(self, conn: Connection) -> tuple[int, int]:
        seq = self.pick()
        conn.execute(audit_ledger.delete().where(audit_ledger.c.seq == seq))
        return seq, seq

    def delete_the_tail_and_move_the_head(self, conn: Connection) -> tuple[int, int]:
        seq = self.pick(low=2)
        conn.execute(audit_ledger.delete().where(audit_ledger.c.seq >= seq))
        move_head(conn, seq - 1)
        return seq, seq

    def insert_after_the_head(self, conn: Connection) -> tuple[int, int]:
        forged = {**row(conn, self.records), "seq": self.records + 1, "event_id": "forged-1"}
        forged["prev_hash"] = forged.pop("hash")
        forged["hash"] = row_hash(forged)
        conn.execute(insert(audit_ledger).values(**forged))
        return self.records + 1, self.records + 1

    def insert_in_the_middle(self, conn: Connection) -> tuple[int, int]:
        seq = self.pick(low=2)
        conn.execute(update(audit_ledger).where(audit_ledger.c.seq >= seq)
                     .values(seq=audit_ledger.c.seq + 10_000_000))  # fmt: skip
        conn.execute(update(audit_ledger).where(audit_ledger.c.seq >= 10_000_000)
                     .values(seq=audit_ledger.c.seq - 10_000_000 + 1))  # fmt: skip
        forged = {**row(conn, seq + 1), "seq": seq, "event_id": "forged-2", "decision": "allow"}
        forged["prev_hash"] = row(conn, seq - 1)["hash"]
        forged["hash"] = row_hash(forged)
        conn.execute(insert(audit_ledger).values(**forged))
        return seq, seq

    def swap_two_seqs(self, conn: Connection) -> tuple[int, int]:
        first = self.pick(high=self.records - 1)
        second = self.pick(low=first + 1)
        for old, new in ((first, -1), (second, first), (-1, second)):
            conn.execute(update(audit_ledger).where(audit_ledger.c.seq == old).values(seq=new))
        return first, first

    def forge_a_signature(self, conn: Connection) -> tuple[int, int]:
        seq = self.rng.choice(self.checkpoints)
        signature = conn.execute(
            select(audit_checkpoints.c.signature).where(audit_checkpoints.c.seq == seq)
        ).scalar_one()
        at = self.rng.randrange(len(signature))
        forged = signature[:at] + ("0" if signature[at] != "0" else "1") + signature[at + 1 :]
        conn.execute(update(audit_checkpoints).where(audit_checkpoints.c.seq == seq)
                     .values(signature=forged))  # fmt: skip
        return seq, seq

    def point_a_checkpoint_elsewhere(self, conn: Connection) -> tuple[int, int]:
        seq = self.rng.choice(self.checkpoints)
        conn.execute(update(audit_checkpoints).where(audit_checkpoints.c.seq == seq)
                     .values(head_hash="f" * 64))  # fmt: skip
        return seq, seq

    def all(self) -> list[Callable[[Connection], tuple[int, int]]]:
        return [
            self.change_a_field,
            self.change_and_rehash_the_record,
            self.rewrite_the_tail,
            self.delete_a_record,
            self.delete_the_tail_and_move_the_head,
            self.insert_after_the_head,
            self.insert_in_the_middle,
            self.swap_two_seqs,
            self.forge_a_signature,
            self.point_a_checkpoint_elsewhere,
        ]


def verify_names(env: dict[str, str], expected: tuple[int, int], what: str) -> bool:
    """``lifecycle audit verify`` exits 1 naming a seq within ``expected``; True when that
    range is one record (located exactly)."""
    result = run_cli(env, "audit", "verify")
    output = (result.stdout + result.stderr).decode(errors="replace")
    named = TAMPERED.search(output)
    assert result.returncode == 1 and named, f"{what}: undetected ({result.returncode}): {output}"
    low, high = expected
    assert low <= int(named.group(1)) <= high, f"{what}: expected seq {low}..{high}: {output}"
    if low < high:  # located to a range: the message must name where it begins
        assert str(low) in output, f"{what}: the range {low}..{high} is not named: {output}"
    return low == high


def schedule(count: int, rng: random.Random) -> list[int]:
    """Mutation kinds to try: every kind as often as ``count`` allows, in random order."""
    kinds = len(Mutations(rng, 2, [1]).all())
    order = [i % kinds for i in range(count)]
    rng.shuffle(order)
    return order


# --------------------------------------------------------------------------- the tests


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_tampering_of_the_sqlite_ledger_is_detected_and_located(
    ledger: Ledger, tmp_path: Path
) -> None:
    seed = fault_seed()
    rng = random.Random(seed)
    print(f"\n[tampering sqlite] seed {seed}: {SQLITE_MUTATIONS} mutations of "
          f"{ledger.records} records, checkpoints {ledger.checkpoints}")  # fmt: skip
    detected: dict[str, int] = {}
    exact = 0
    for n, kind in enumerate(schedule(SQLITE_MUTATIONS, rng)):
        env = ledger.copy(tmp_path / f"copy-{n}")
        engine = make_engine(f"sqlite:///{tmp_path / f'copy-{n}' / 'lifecycle.sqlite'}")
        mutation = Mutations(rng, ledger.records, ledger.checkpoints).all()[kind]
        with engine.begin() as conn:
            drop_triggers(conn)
            expected = mutation(conn)
        engine.dispose()
        exact += verify_names(env, expected, mutation.__name__)
        detected[mutation.__name__] = detected.get(mutation.__name__, 0) + 1
        shutil.rmtree(tmp_path / f"copy-{n}")
    print(f"[tampering sqlite] detected and located: {detected}; {exact} to one record")
    assert sum(detected.values()) == SQLITE_MUTATIONS


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_every_tampering_of_the_postgres_ledger_is_detected_and_located(
    ledger: Ledger, postgres_db_url: str, tmp_path: Path
) -> None:
    seed = fault_seed()
    rng = random.Random(seed)
    print(f"\n[tampering postgres] seed {seed}: {POSTGRES_MUTATIONS} mutations")
    base_url = make_url(postgres_db_url)
    base = make_engine(postgres_db_url)
    create_ledger(base)
    source = create_engine(f"sqlite:///{ledger.data_dir / 'lifecycle.sqlite'}")
    with source.connect() as reading, base.begin() as writing:
        for table in (audit_ledger, audit_checkpoints):
            rows = [dict(r) for r in reading.execute(select(table)).mappings()]
            writing.execute(insert(table), rows)
        head = reading.execute(select(audit_chain_head)).mappings().one()
        writing.execute(update(audit_chain_head).values(seq=head["seq"], hash=head["hash"]))
    base.dispose()
    env = {**ledger.copy(tmp_path / "keys"), "LIFECYCLE_DB_URL": postgres_db_url}
    verified = run_cli(env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    admin = f"host={base_url.host} port={base_url.port} user={base_url.username} dbname=postgres"
    detected: dict[str, int] = {}
    exact = 0
    for n, kind in enumerate(schedule(POSTGRES_MUTATIONS, rng)):
        name = f"{base_url.database}_m{n}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{base_url.database}"')
        url = base_url.set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        mutation = Mutations(rng, ledger.records, ledger.checkpoints).all()[kind]
        try:
            with engine.begin() as conn:
                drop_triggers(conn)
                expected = mutation(conn)
            engine.dispose()
            exact += verify_names({**env, "LIFECYCLE_DB_URL": url}, expected, mutation.__name__)
        finally:
            engine.dispose()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        detected[mutation.__name__] = detected.get(mutation.__name__, 0) + 1
    print(f"[tampering postgres] detected and located: {detected}; {exact} to one record")
    assert sum(detected.values()) == POSTGRES_MUTATIONS
