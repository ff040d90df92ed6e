"""The audit ledger in a SQLAlchemy database: every decision, once, in one hash chain.

Nothing here rewrites a record: the only write to an existing row is moving the chain head
(:mod:`sinks.ledger.tables`).

One chain, many writers: each append runs in one transaction that first takes the chain head.
On SQLite that is ``BEGIN IMMEDIATE`` (the database's single writer lock); on PostgreSQL it is
``SELECT ... FOR UPDATE`` of the head row. Workers in any number of processes therefore append
whole batches one after another, each continuing the chain where the last one ended, and
``verify`` sees a single structure. The lock is held for one batched INSERT, so batches (not
single records) are what make this fast.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from core.clock import Clock, SystemClock
from core.db import make_engine
from core.settings import Settings
from sinks.canonical import chain_rows, row_hash
from sinks.checkpoints import Checkpoint, CheckpointSigner, checkpoint_due, provision_signing_key
from sinks.entry import AuditEntry
from sinks.exceptions import LedgerError
from sinks.ledger.queries import count_records
from sinks.ledger.tables import (
    IN_CHUNK,
    audit_chain_head,
    audit_checkpoints,
    audit_ledger,
    checkpoint_of,
    create_ledger,
    ledger_error,
)
from sinks.merkle import Frontier
from sinks.stored import decision_row, truncate_millis, utc_text


class AuditLedger:
    """The ledger's tables in a database, for the lookups a stage makes before it decides (no
    signing key needed); :class:`SqlAuditSink` adds the writing."""

    def __init__(self, engine: Engine, *, create: bool = True) -> None:
        self._engine = engine
        if create:
            self.create_all()

    @property
    def engine(self) -> Engine:
        return self._engine

    def create_all(self) -> None:
        """Create tables, triggers and head row when missing (see :func:`create_ledger`)."""
        create_ledger(self._engine)

    def recorded_events(self, event_ids: Sequence[str]) -> dict[str, AuditEntry]:
        """event_id -> its stored entry, for those of ``event_ids`` the ledger holds."""
        found: dict[str, AuditEntry] = {}
        try:
            with self._engine.connect() as conn:
                for start in range(0, len(event_ids), IN_CHUNK):
                    chunk = event_ids[start : start + IN_CHUNK]
                    query = select(audit_ledger).where(audit_ledger.c.event_id.in_(chunk))
                    for row in conn.execute(query):
                        entry = AuditEntry(dict(row._mapping))
                        found[entry.event_id] = entry
        except SQLAlchemyError as exc:
            raise ledger_error(exc, "look up events") from exc
        return found

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, genesis hash) while empty."""
        try:
            with self._engine.connect() as conn:
                row = conn.execute(select(audit_chain_head.c.seq, audit_chain_head.c.hash)).one()
        except SQLAlchemyError as exc:
            raise ledger_error(exc, "read the head") from exc
        return int(row[0]), str(row[1])


class SqlAuditSink(AuditLedger):
    """The ledger in a SQLAlchemy database (SQLite by default, PostgreSQL in production).

    ``append`` writes a batch in one transaction that holds the chain head (SQLite:
    ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE`` on ``audit_chain_head``), so
    any number of sinks in any number of processes extend one chain. Inside that transaction
    it also signs a checkpoint when ``checkpoint_every`` records or ``checkpoint_interval``
    seconds have passed since the last one (whichever first; the last checkpoint is read from
    the database, so workers share the schedule).
    """

    def __init__(
        self,
        engine: Engine,
        signer: CheckpointSigner,
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        clock: Clock | None = None,
        create: bool = True,
        owns_engine: bool = False,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._signer = signer
        self._every = checkpoint_every
        self._interval = timedelta(seconds=checkpoint_interval)
        self._clock: Clock = clock or SystemClock()
        self._owns_engine = owns_engine
        self._closed = False
        self._lock = threading.Lock()  # one append at a time per sink (the DB serializes sinks)
        self.last_checkpoint: Checkpoint | None = None
        super().__init__(engine, create=create)

    def append(self, decisions: Sequence[Mapping[str, Any]]) -> list[AuditEntry]:
        """Append decoded ``lifecycle.Decision`` values in one transaction; see :class:`AuditSink`.

        Malformed input raises :class:`InvalidDecisionError` (naming its index) before anything
        is written; a database that is down raises :class:`LedgerUnavailableError`. Either way
        nothing of the batch is recorded and the caller must not commit its offsets.
        """
        rows = [decision_row(decision, index) for index, decision in enumerate(decisions)]
        if not rows:
            return []
        event_ids = [row["event_id"] for row in rows]
        first = dict(zip(event_ids, rows, strict=True))
        if len(first) < len(rows):  # an event twice in the batch: its first decision counts
            first = {}
            for row in rows:
                first.setdefault(row["event_id"], row)
        with self._lock:
            self._check_open()
            try:
                with _writing(self._engine) as (conn, head_seq, head_hash):
                    stored = _stored_rows(conn, list(first))
                    new = [row for event_id, row in first.items() if event_id not in stored]
                    if new:
                        now = self._now()
                        digests: list[bytes] = []
                        head_seq, head_hash = chain_rows(
                            new, head_seq, head_hash, utc_text(now), digests
                        )
                        _insert(conn, new)
                        _move_head(conn, head_seq, head_hash)
                        last = _last_checkpoint(conn)
                        due = checkpoint_due(
                            head_seq,
                            None if last is None else (last.seq, last.signed_at),
                            now,
                            self._every,
                            self._interval,
                        )
                        if due:
                            self._sign(conn, head_seq, head_hash, now, digests)
            except SQLAlchemyError as exc:
                raise ledger_error(exc, "append") from exc
        if len(new) == len(rows):  # the usual batch: every decision new, each once
            return list(map(AuditEntry, rows))
        stored.update((row["event_id"], row) for row in new)
        entries = {event_id: AuditEntry(row) for event_id, row in stored.items()}
        return [entries[event_id] for event_id in event_ids]

    def checkpoint(self, *, only_if_due: bool = False) -> Checkpoint | None:
        """Sign the current head (the latest checkpoint when it already covers the head).

        With ``only_if_due``, sign only when the ``every``/``interval`` rule says so (for a
        timer in the worker, so an idle ledger's tail gets signed). None when nothing to sign.
        """
        with self._lock:
            self._check_open()
            try:
                with _writing(self._engine) as (conn, head_seq, head_hash):
                    now = self._now()
                    last = _last_checkpoint(conn)
                    if only_if_due:
                        last_at = None if last is None else (last.seq, last.signed_at)
                        if not checkpoint_due(head_seq, last_at, now, self._every, self._interval):
                            return None
                    if head_seq == 0:
                        return None
                    if last is not None and last.seq >= head_seq:
                        return last
                    return self._sign(conn, head_seq, head_hash, now)
            except SQLAlchemyError as exc:
                raise ledger_error(exc, "checkpoint") from exc

    def adopt(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Add records that already carry their seq and hashes (read back from
        ``privacy.audit`` after the database was restored from a backup), in seq order.

        Each must be the next one after the head, name the head's hash as ``prev_hash`` and
        hash to its own ``hash``; the first that does not raises :class:`LedgerError` naming
        its seq, and nothing of the batch is written. Records at or below the head are passed
        over (the database has them). Signs a checkpoint over the new head. Returns how many
        were added."""
        with self._lock:
            self._check_open()
            try:
                with _writing(self._engine) as (conn, head_seq, head_hash):
                    new: list[dict[str, Any]] = []
                    for row in rows:
                        seq = int(row["seq"])
                        if seq <= head_seq:
                            continue
                        if seq != head_seq + 1 or row["prev_hash"] != head_hash:
                            raise LedgerError(
                                f"record {seq} does not follow the ledger's head "
                                f"(seq {head_seq}): it was not written after it"
                            )
                        if row_hash(row) != row["hash"]:
                            raise LedgerError(f"record {seq} does not match its hash")
                        new.append(dict(row))
                        head_seq, head_hash = seq, str(row["hash"])
                    if new:
                        _insert(conn, new)
                        _move_head(conn, head_seq, head_hash)
                        self._sign(conn, head_seq, head_hash, self._now())
            except SQLAlchemyError as exc:
                raise ledger_error(exc, "adopt records") from exc
        return len(new)

    def close(self) -> None:
        """Sign the unsigned tail, then release the engine when this sink made it."""
        if self._closed:
            return
        try:
            self.checkpoint()
        finally:
            self._closed = True
            if self._owns_engine:
                self._engine.dispose()

    def __enter__(self) -> SqlAuditSink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _now(self) -> datetime:
        return truncate_millis(self._clock())

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("the audit sink is closed")

    def _sign(
        self,
        conn: Connection,
        seq: int,
        head_hash: str,
        now: datetime,
        recent: Sequence[bytes] = (),
    ) -> Checkpoint:
        tree = tree_frontier(conn, seq, recent)
        checkpoint = self._signer.sign(seq, head_hash, now, tree.root().hex())
        conn.execute(
            audit_checkpoints.insert().values(
                seq=checkpoint.seq,
                head_hash=checkpoint.head_hash,
                signed_at=checkpoint.signed_at,
                key_id=checkpoint.key_id,
                signature=checkpoint.signature,
                tree_root=checkpoint.tree_root,
                tree_frontier=orjson.dumps(tree.to_hex()).decode(),
            )
        )
        self.last_checkpoint = checkpoint
        return checkpoint


def open_audit_sink(settings: Settings, **kwargs: Any) -> SqlAuditSink:
    """The configured ledger: ``LIFECYCLE_DB_URL`` and ``LIFECYCLE_SIGNING_KEY_FILE`` (a
    missing key file: see :func:`~sinks.checkpoints.provision_signing_key`)."""
    engine = make_engine(settings.db_url)
    server = None if engine.dialect.name == "sqlite" else engine.url.render_as_string()
    try:
        create_ledger(engine)  # so that an empty ledger can be counted
        signer = provision_signing_key(
            settings.signing_key_file,
            server_database=server,
            ledger_records=lambda: count_records(engine),
        )
    except BaseException:
        engine.dispose()
        raise
    return SqlAuditSink(engine, signer, owns_engine=True, **kwargs)


@contextmanager
def _writing(engine: Engine) -> Iterator[tuple[Connection, int, str]]:
    """A write transaction holding the chain head; yields (connection, head seq, head hash)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the single writer lock up front
        else:
            conn.execution_options(isolation_level="READ COMMITTED")
        try:
            row = conn.execute(
                select(audit_chain_head.c.seq, audit_chain_head.c.hash)
                .where(audit_chain_head.c.id == 1)
                .with_for_update()
            ).one_or_none()
            if row is None:
                raise LedgerError("the ledger has no chain head row: run create_all first")
            yield conn, int(row[0]), str(row[1])
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def _stored_rows(conn: Connection, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored rows of those of ``event_ids`` the ledger already holds (usually none)."""
    if conn.dialect.name == "sqlite":
        # which ones, straight from the unique index; only a redelivery needs whole rows
        event_ids = _sqlite_known_event_ids(conn, event_ids)
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(event_ids), IN_CHUNK):
        chunk = event_ids[start : start + IN_CHUNK]
        for row in conn.execute(select(audit_ledger).where(audit_ledger.c.event_id.in_(chunk))):
            found[row.event_id] = dict(row._mapping)
    return found


def _sqlite_known_event_ids(conn: Connection, event_ids: list[str]) -> list[str]:
    known: list[str] = []
    with _driver_cursor(conn) as cursor:
        for start in range(0, len(event_ids), IN_CHUNK):
            chunk = event_ids[start : start + IN_CHUNK]
            statement = _SQLITE_KNOWN if len(chunk) == IN_CHUNK else _sqlite_known(len(chunk))
            known.extend(event_id for (event_id,) in cursor.execute(statement, chunk))
    return known


def _sqlite_known(count: int) -> str:
    return f"SELECT event_id FROM audit_ledger WHERE event_id IN ({', '.join('?' * count)})"


_SQLITE_KNOWN = _sqlite_known(IN_CHUNK)


@contextmanager
def _driver_cursor(conn: Connection) -> Iterator[Any]:
    """A cursor of the DB-API connection under ``conn`` (inside its transaction), for the hot
    statements; driver errors come out as SQLAlchemy's, as through ``conn.execute``."""
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except dbapi.Error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi.Error, dialect=conn.dialect) from exc
    finally:
        cursor.close()


_LEDGER_COLUMNS = tuple(column.name for column in audit_ledger.columns)
_ledger_values = operator.itemgetter(*_LEDGER_COLUMNS)
_SQLITE_INSERT = (
    f"INSERT INTO audit_ledger ({', '.join(_LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_LEDGER_COLUMNS))})"
)

_PG_COPY = f"COPY audit_ledger ({', '.join(_LEDGER_COLUMNS)}) FROM STDIN"


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """One executemany for the batch (on SQLite straight to the driver: no per-row overhead)."""
    if conn.dialect.name == "sqlite":
        with _driver_cursor(conn) as cursor:
            cursor.executemany(_SQLITE_INSERT, map(_ledger_values, rows))
    elif conn.dialect.driver == "psycopg":
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(_PG_COPY) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(_ledger_values(row))
    else:
        conn.execute(audit_ledger.insert(), rows)


def _move_head(conn: Connection, seq: int, hash_: str) -> None:
    conn.execute(
        update(audit_chain_head).where(audit_chain_head.c.id == 1).values(seq=seq, hash=hash_)
    )


_SQLITE_HASHES = "SELECT hash FROM audit_ledger WHERE seq > ? AND seq <= ? ORDER BY seq"


def tree_frontier(conn: Connection, seq: int, recent: Sequence[bytes] = ()) -> Frontier:
    """The Merkle tree of records 1..``seq``: the frontier stored with the latest checkpoint
    at or below ``seq``, grown by the records after it (from the first record when no
    checkpoint has one: a ledger older than tree heads, once).

    ``recent``: the hashes (raw bytes) of the records just written up to ``seq``, in this
    transaction; when they are exactly the records after that checkpoint they are used as
    they are, else the hashes are read back."""
    row = conn.execute(
        select(audit_checkpoints.c.seq, audit_checkpoints.c.tree_frontier)
        .where(audit_checkpoints.c.seq <= seq, audit_checkpoints.c.tree_frontier.is_not(None))
        .order_by(audit_checkpoints.c.seq.desc())
        .limit(1)
    ).first()
    frontier = Frontier()
    if row is not None:
        try:
            frontier = Frontier.from_hex(int(row[0]), orjson.loads(row[1]))
        except (ValueError, TypeError):
            frontier = Frontier()  # unreadable: grow the tree again from the start
    if recent and frontier.size == seq - len(recent):
        frontier.extend_record_digests(recent)
    elif conn.dialect.name == "sqlite":
        with _driver_cursor(conn) as cursor:  # in-process: rows through SQLAlchemy dominate
            rows = cursor.execute(_SQLITE_HASHES, (frontier.size, seq))
            frontier.extend_records(record_hash for (record_hash,) in rows)
    else:
        frontier.extend_records(
            conn.execute(
                select(audit_ledger.c.hash)
                .where(audit_ledger.c.seq > frontier.size, audit_ledger.c.seq <= seq)
                .order_by(audit_ledger.c.seq)
            ).scalars()
        )
    if frontier.size != seq:
        raise LedgerError(f"records up to seq {seq} are missing: cannot grow the Merkle tree")
    return frontier


def _last_checkpoint(conn: Connection) -> Checkpoint | None:
    row = conn.execute(
        select(audit_checkpoints).order_by(audit_checkpoints.c.seq.desc()).limit(1)
    ).first()
    return None if row is None else checkpoint_of(dict(row._mapping))


# --------------------------------------------------------------------------- reading
