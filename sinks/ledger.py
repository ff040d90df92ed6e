"""The audit ledger: every decision, once, in one hash chain, in a SQLAlchemy database.

Tables (created by :func:`create_ledger`, i.e. ``SqlAuditSink.create_all``):

* ``audit_ledger``: one row per decision, in the stored form of :mod:`sinks.chain`
  (timestamps as canonical UTC text, ``categories``/``purposes``/``erasure`` as canonical JSON
  text). ``seq`` is global and gapless from 1; ``event_id`` is unique, which makes a
  redelivered decision a no-op.
* ``audit_checkpoints``: signed statements over the chain head and the Merkle tree head of
  the records up to it (:mod:`sinks.checkpoints`, :mod:`sinks.merkle`), each with the tree's
  frontier at that size, from which the next checkpoint's tree grows.
* ``audit_chain_head``: one row (seq, hash of the last record); the lock every append takes.

Append-only in the database: triggers refuse UPDATE and DELETE on ``audit_ledger`` and
``audit_checkpoints`` (and TRUNCATE on PostgreSQL), and DELETE of the head row. Nothing in this
module rewrites a record: the only write to an existing row is moving the chain head.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from lifecycle.config import Settings
from lifecycle.db import make_engine, schema_lock
from sinks.chain import (
    CANONICAL_KEYS,
    GENESIS_HASH,
    AuditEntry,
    ChainChecker,
    VerifyReport,
    chain_rows,
    decision_row,
    row_hash,
    stored_values_hash,
    truncate_millis,
    utc_text,
)
from sinks.checkpoints import (
    Checkpoint,
    CheckpointSigner,
    checkpoint_due,
    checkpoint_problem,
    key_id_of,
    provision_signing_key,
)
from sinks.exceptions import LedgerError, LedgerUnavailableError
from sinks.merkle import Frontier

Clock = Callable[[], datetime]
"""Returns the current time (aware). Injected so checkpoint timing is testable."""


def utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- interface


class AuditSink(Protocol):
    """Where decisions land, hash-chained, exactly once each."""

    def append(self, decisions: Sequence[Mapping[str, Any]]) -> list[AuditEntry]:
        """Record decoded ``lifecycle.Decision`` values; durable when this returns.

        Returns the stored entry of every input, in input order; a decision whose
        ``event_id`` is already recorded adds nothing and gets the stored entry back.
        """
        ...

    def checkpoint(self, *, only_if_due: bool = False) -> Checkpoint | None:
        """Sign the chain head now (or only when due); None while the ledger is empty."""
        ...

    def close(self) -> None:
        """Sign the head when records are unsigned, and release resources."""
        ...


# --------------------------------------------------------------------------- tables

metadata = MetaData()

_SEQ = BigInteger().with_variant(Integer, "sqlite")  # SQLite: seq is the rowid

audit_ledger = Table(
    "audit_ledger",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("event_id", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("subject_ref", Text, nullable=False),
    Column("decision", String(8), nullable=False),
    Column("reason_code", Text, nullable=False),
    Column("policy_version", Text, nullable=False),
    Column("occurred_at", String(24), nullable=False),
    Column("decided_at", String(24), nullable=False),
    Column("recorded_at", String(24), nullable=False),
    Column("categories", Text, nullable=False),
    Column("purpose", Text, nullable=True),
    Column("purposes", Text, nullable=False),
    Column("consent_granted", Boolean, nullable=True),
    Column("recipient", Text, nullable=True),
    Column("actor_role", Text, nullable=True),
    Column("source", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("erasure", Text, nullable=True),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_ledger_occurred_at", "occurred_at"),
)

SUBJECT_PREFIX_LEN = 16


def _subject_prefix(column: ColumnElement[str]) -> ColumnElement[str]:
    # literal arguments, so the index expression and the query's are the same text
    return func.substr(column, literal_column("1"), literal_column(str(SUBJECT_PREFIX_LEN)))


# The subject index holds the first 16 hex digits (64 bits) of the pseudonym: as selective as
# the whole HMAC, a quarter of its size, which keeps appends fast (SQLite: ~40k -> ~60k/s).
Index("ix_audit_ledger_subject_prefix", _subject_prefix(audit_ledger.c.subject_ref))

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("signed_at", String(24), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", Text, nullable=False),
    # Added after the first release (create_ledger adds them to an older table); NULL in
    # checkpoints signed before tree heads existed.
    Column("tree_root", String(64), nullable=True),
    Column("tree_frontier", Text, nullable=True),  # JSON list of hex node hashes
)

_TREE_COLUMNS = {"tree_root": "VARCHAR(64)", "tree_frontier": "TEXT"}

audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="audit_chain_head_single_row"),
)

APPEND_ONLY_TABLES = ("audit_ledger", "audit_checkpoints")

_PG_REFUSE_FUNCTION = "lifecycle_audit_refuse_change"
_IN_CHUNK = 500


def _sqlite_triggers() -> list[str]:
    statements = []
    for table in APPEND_ONLY_TABLES:
        for op in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"
            )
    statements.append(
        "CREATE TRIGGER IF NOT EXISTS audit_chain_head_no_delete BEFORE DELETE ON "
        "audit_chain_head BEGIN SELECT RAISE(ABORT, 'audit_chain_head: DELETE refused'); END"
    )
    return statements


def _pg_triggers() -> dict[tuple[str, str], str]:
    """(table, trigger name) -> CREATE TRIGGER statement."""
    refuse = f"EXECUTE FUNCTION {_PG_REFUSE_FUNCTION}()"
    out = {}
    for table in APPEND_ONLY_TABLES:
        out[(table, f"{table}_append_only")] = (
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW {refuse}"
        )
        out[(table, f"{table}_no_truncate")] = (
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT {refuse}"
        )
    out[("audit_chain_head", "audit_chain_head_no_delete")] = (
        "CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE OR TRUNCATE ON audit_chain_head "
        f"FOR EACH STATEMENT {refuse}"
    )
    return out


_PG_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {_PG_REFUSE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END
$body$
"""


def create_ledger(engine: Engine) -> None:
    """Create the tables, the append-only triggers and the head row when missing.

    Idempotent and safe when several processes start at once (SQLite: under the write lock;
    PostgreSQL: under a transaction-scoped advisory lock, DDL being transactional there).
    """
    dialect = engine.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise LedgerError(f"the audit ledger supports SQLite and PostgreSQL, not {dialect}")
    try:
        with schema_lock(engine) as conn:
            metadata.create_all(conn)
            if dialect == "sqlite":
                for statement in _sqlite_triggers():
                    conn.exec_driver_sql(statement)
            else:
                existing = {
                    (str(table), str(trigger))
                    for table, trigger in conn.execute(
                        text(
                            "SELECT c.relname, t.tgname FROM pg_trigger t "
                            "JOIN pg_class c ON c.oid = t.tgrelid "
                            "WHERE c.oid = ANY(ARRAY[to_regclass('audit_ledger'), "
                            "to_regclass('audit_checkpoints'), to_regclass('audit_chain_head')])"
                        )
                    )
                }
                missing = [sql for key, sql in _pg_triggers().items() if key not in existing]
                if missing:
                    conn.exec_driver_sql(_PG_FUNCTION_SQL)
                    for statement in missing:
                        conn.exec_driver_sql(statement)
            _add_tree_columns(conn)
            if conn.execute(select(audit_chain_head.c.id)).first() is None:
                last = conn.execute(
                    select(audit_ledger.c.seq, audit_ledger.c.hash)
                    .order_by(audit_ledger.c.seq.desc())
                    .limit(1)
                ).first()
                seq, hash_ = (0, GENESIS_HASH) if last is None else (int(last[0]), str(last[1]))
                conn.execute(audit_chain_head.insert().values(id=1, seq=seq, hash=hash_))
    except SQLAlchemyError as exc:
        raise _ledger_error(exc, "create") from exc


def _add_tree_columns(conn: Connection) -> None:
    """Give a ledger created before tree heads existed their columns (only when missing: a
    role that may only append never needs DDL rights)."""
    present = {column["name"] for column in inspect(conn).get_columns("audit_checkpoints")}
    for name, sql_type in _TREE_COLUMNS.items():
        if name not in present:
            conn.exec_driver_sql(f"ALTER TABLE audit_checkpoints ADD COLUMN {name} {sql_type}")


# --------------------------------------------------------------------------- the sink


class SqlAuditSink:
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
        clock: Clock = utc_now,
        create: bool = True,
        owns_engine: bool = False,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._engine = engine
        self._signer = signer
        self._every = checkpoint_every
        self._interval = timedelta(seconds=checkpoint_interval)
        self._clock = clock
        self._owns_engine = owns_engine
        self._closed = False
        self._lock = threading.Lock()  # one append at a time per sink (the DB serializes sinks)
        self.last_checkpoint: Checkpoint | None = None
        if create:
            self.create_all()

    @property
    def engine(self) -> Engine:
        return self._engine

    def create_all(self) -> None:
        """Create tables, triggers and head row when missing (see :func:`create_ledger`)."""
        create_ledger(self._engine)

    def append(self, decisions: Sequence[Mapping[str, Any]]) -> list[AuditEntry]:
        """Append decoded ``lifecycle.Decision`` values in one transaction; see :class:`AuditSink`.

        Malformed input raises :class:`InvalidDecisionError` (naming its index) before anything
        is written; a database that is down raises :class:`LedgerUnavailableError`. Either way
        nothing of the batch is recorded and the caller must not commit its offsets.
        """
        rows = [decision_row(decision, index) for index, decision in enumerate(decisions)]
        if not rows:
            return []
        first: dict[str, dict[str, Any]] = {}
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
                        head_seq, head_hash = chain_rows(new, head_seq, head_hash, utc_text(now))
                        _insert(conn, new)
                        _move_head(conn, head_seq, head_hash)
                        stored.update((row["event_id"], row) for row in new)
                        last = _last_checkpoint(conn)
                        due = checkpoint_due(
                            head_seq,
                            None if last is None else (last.seq, last.signed_at),
                            now,
                            self._every,
                            self._interval,
                        )
                        if due:
                            self._sign(conn, head_seq, head_hash, now)
            except SQLAlchemyError as exc:
                raise _ledger_error(exc, "append") from exc
        entries = {event_id: AuditEntry(row) for event_id, row in stored.items()}
        return [entries[row["event_id"]] for row in rows]

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
                raise _ledger_error(exc, "checkpoint") from exc

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
                raise _ledger_error(exc, "adopt records") from exc
        return len(new)

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, genesis hash) while empty."""
        try:
            with self._engine.connect() as conn:
                row = conn.execute(select(audit_chain_head.c.seq, audit_chain_head.c.hash)).one()
        except SQLAlchemyError as exc:
            raise _ledger_error(exc, "read the head") from exc
        return int(row[0]), str(row[1])

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

    def _sign(self, conn: Connection, seq: int, head_hash: str, now: datetime) -> Checkpoint:
        tree = tree_frontier(conn, seq)
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
    for start in range(0, len(event_ids), _IN_CHUNK):
        chunk = event_ids[start : start + _IN_CHUNK]
        for row in conn.execute(select(audit_ledger).where(audit_ledger.c.event_id.in_(chunk))):
            found[row.event_id] = dict(row._mapping)
    return found


def _sqlite_known_event_ids(conn: Connection, event_ids: list[str]) -> list[str]:
    known: list[str] = []
    with _driver_cursor(conn) as cursor:
        for start in range(0, len(event_ids), _IN_CHUNK):
            chunk = event_ids[start : start + _IN_CHUNK]
            statement = _SQLITE_KNOWN if len(chunk) == _IN_CHUNK else _sqlite_known(len(chunk))
            known.extend(event_id for (event_id,) in cursor.execute(statement, chunk))
    return known


def _sqlite_known(count: int) -> str:
    return f"SELECT event_id FROM audit_ledger WHERE event_id IN ({', '.join('?' * count)})"


_SQLITE_KNOWN = _sqlite_known(_IN_CHUNK)


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


def tree_frontier(conn: Connection, seq: int) -> Frontier:
    """The Merkle tree of records 1..``seq``: the frontier stored with the latest checkpoint
    at or below ``seq``, grown by the records after it (from the first record when no
    checkpoint has one: a ledger older than tree heads, once)."""
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
    if conn.dialect.name == "sqlite":
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
    return None if row is None else _checkpoint_of(dict(row._mapping))


def _checkpoint_of(row: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(
        seq=int(row["seq"]),
        head_hash=str(row["head_hash"]),
        signed_at=str(row["signed_at"]),
        key_id=str(row["key_id"]),
        signature=str(row["signature"]),
        tree_root=None if row.get("tree_root") is None else str(row["tree_root"]),
    )


def _ledger_error(exc: SQLAlchemyError, action: str) -> LedgerError:
    # The driver's own message only: SQLAlchemy's would list every parameter of the batch.
    orig = getattr(exc, "orig", None) or exc
    detail = f"{type(orig).__name__}: {str(orig).strip().splitlines()[0] if str(orig) else ''}"
    if isinstance(exc, OperationalError | InterfaceError) or getattr(
        exc, "connection_invalidated", False
    ):
        return LedgerUnavailableError(f"audit ledger database unavailable ({action}): {detail}")
    return LedgerError(f"audit ledger {action} failed: {detail}")


# --------------------------------------------------------------------------- reading


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction with one snapshot for all its statements."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # WAL: the first read fixes the snapshot
        else:
            conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield conn
        finally:
            conn.rollback()


def read_transaction(engine: Engine) -> AbstractContextManager[Connection]:
    """A read-only transaction whose statements all see one snapshot of the ledger."""
    return _reading(engine)


def require_ledger(conn: Connection) -> None:
    """Raise :class:`LedgerError` when the database holds no audit ledger."""
    _require_ledger(conn)


def _require_ledger(conn: Connection) -> None:
    names = set(inspect(conn).get_table_names())
    missing = {t.name for t in metadata.sorted_tables} - names
    if missing:
        tables = ", ".join(sorted(missing))
        raise LedgerError(f"no audit ledger in this database (missing {tables})")


_VERIFY_COLUMNS = [audit_ledger.c[name] for name in CANONICAL_KEYS] + [audit_ledger.c.hash]
_SQLITE_VERIFY = f"SELECT {', '.join(CANONICAL_KEYS)}, hash FROM audit_ledger ORDER BY seq"
_SEQ_AT = CANONICAL_KEYS.index("seq")
_PREV_AT = CANONICAL_KEYS.index("prev_hash")
_HASH_AT = len(CANONICAL_KEYS)


def verify(
    engine: Engine,
    public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey],
    *,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 20_000,
) -> VerifyReport:
    """Check the whole ledger: every hash and link in seq order, and every signed checkpoint.

    Streams the records (server-side cursor on PostgreSQL) in one read snapshot and stops at
    the first problem: a changed record, a missing one (removed), an inserted one, a reordered
    pair, an event recorded twice, a checkpoint whose signature fails (forged, or another key)
    or whose head differs from the chain, or a tail cut off below the head or a checkpoint.

    ``first_bad_seq`` is the first seq at which the stored ledger is provably inconsistent.
    A tamperer who re-computed hashes can hide earlier changes back to the last checkpoint
    that still matches; the problem text then names that range. ``public_key`` may be several
    keys (after a rotation). ``progress`` is called with the number of records checked so far.
    """
    keys = [public_key] if isinstance(public_key, Ed25519PublicKey) else list(public_key)
    key_ids = {key_id_of(key): key for key in keys}
    try:
        with _reading(engine) as conn:
            _require_ledger(conn)
            checkpoints = read_checkpoints(conn)
            head_row = conn.execute(select(audit_chain_head.c.seq, audit_chain_head.c.hash)).first()
            result = _stream_for_verify(conn, batch_size)
            repeat = _first_repeated_event(conn)
            return _walk(result, checkpoints, head_row, key_ids, progress, repeat)
    except SQLAlchemyError as exc:
        raise _ledger_error(exc, "verify") from exc


def read_checkpoints(
    conn: Connection, first_seq: int | None = None, last_seq: int | None = None
) -> dict[int, Checkpoint]:
    """The signed checkpoints (seq -> checkpoint), of ``first_seq..last_seq`` when given.

    Reads a ledger whose table predates tree heads as it is (no DDL: a reader may not alter).
    """
    present = {column["name"] for column in inspect(conn).get_columns("audit_checkpoints")}
    columns = [c for c in audit_checkpoints.c if c.name in present and c.name != "tree_frontier"]
    statement = select(*columns).order_by(audit_checkpoints.c.seq)
    if first_seq is not None:
        statement = statement.where(audit_checkpoints.c.seq >= first_seq)
    if last_seq is not None:
        statement = statement.where(audit_checkpoints.c.seq <= last_seq)
    return {int(row.seq): _checkpoint_of(dict(row._mapping)) for row in conn.execute(statement)}


def _first_repeated_event(conn: Connection) -> tuple[int, str] | None:
    """(seq, problem) of the first record whose event_id an earlier record already has.

    The unique index makes this impossible through the ledger; it catches a database whose
    index was dropped. One pass over the event_id index (about 0.3 us a record on SQLite).
    """
    repeated = (
        conn.execute(
            select(audit_ledger.c.event_id)
            .group_by(audit_ledger.c.event_id)
            .having(func.count() > 1)
            .limit(_IN_CHUNK)
        )
        .scalars()
        .all()
    )
    first: tuple[int, str] | None = None
    for event_id in repeated:
        seqs = (
            conn.execute(
                select(audit_ledger.c.seq)
                .where(audit_ledger.c.event_id == event_id)
                .order_by(audit_ledger.c.seq)
            )
            .scalars()
            .all()
        )
        if first is None or seqs[1] < first[0]:
            problem = (
                f"record {seqs[1]} repeats event {event_id!r}, already recorded at seq {seqs[0]}"
            )
            first = (int(seqs[1]), problem)
    return first


def _stream_for_verify(conn: Connection, batch_size: int) -> Iterable[Sequence[Any]]:
    """Every record as (canonical columns..., hash), in seq order, streamed."""
    if conn.dialect.name == "sqlite":
        # straight from the driver: SQLite is in-process, so its rows are the bottleneck
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.arraysize = batch_size
        return cursor.execute(_SQLITE_VERIFY)  # type: ignore[no-any-return]
    return conn.execute(  # a server-side cursor
        select(*_VERIFY_COLUMNS)
        .order_by(audit_ledger.c.seq)
        .execution_options(yield_per=batch_size)
    )


def _walk(
    result: Iterable[Sequence[Any]],
    checkpoints: dict[int, Checkpoint],
    head_row: Sequence[Any] | None,
    key_ids: dict[str, Ed25519PublicKey],
    progress: Callable[[int], None] | None,
    repeat: tuple[int, str] | None,
) -> VerifyReport:
    checker = ChainChecker()
    checked = 0
    signed_seq = 0  # last checkpoint that matched the chain
    signed = 0

    def report(first_bad: int, problem: str) -> VerifyReport:
        return VerifyReport(
            ok=False,
            records=checked,
            checkpoints=signed,
            first_bad_seq=first_bad,
            problem=problem,
            head_seq=checker.head_seq,
            head_hash=checker.head_hash,
            signed_seq=signed_seq,
        )

    check, hash_of, checkpoint_at = checker.check, stored_values_hash, checkpoints.get
    repeat_seq = None if repeat is None else repeat[0]
    tree = Frontier()  # the Merkle tree of the records checked so far
    grow = tree.append_record
    for values in result:
        seq, stored = values[_SEQ_AT], values[_HASH_AT]
        try:
            computed = hash_of(values)
        except (TypeError, ValueError, KeyError) as exc:
            return report(seq, f"record {seq} cannot be encoded (a column was altered): {exc!r}")
        problem = check(seq, values[_PREV_AT], stored, computed)
        if problem is not None:
            return report(problem.seq, problem.message)
        if seq == repeat_seq and repeat is not None:
            return report(seq, repeat[1])
        checked += 1
        grow(stored)
        checkpoint = checkpoint_at(seq)
        if checkpoint is not None:
            bad_signature = checkpoint_problem(checkpoint, key_ids)
            if bad_signature is not None:
                return report(seq, bad_signature)
            if checkpoint.head_hash != stored:
                return report(
                    seq,
                    f"record {seq} does not match the signed checkpoint at seq {seq} (signed "
                    f"head {checkpoint.head_hash}, chain has {stored}): it was rewritten, "
                    f"possibly with records back to seq {signed_seq + 1} (the chain was "
                    "re-hashed), or the checkpoint was signed over a wrong head",
                )
            if checkpoint.tree_root is not None and checkpoint.tree_root != tree.root().hex():
                return report(
                    seq,
                    f"the tree head signed at seq {seq} (root {checkpoint.tree_root}) is not "
                    f"the Merkle root of records 1..{seq}: it was signed over a wrong tree",
                )
            signed_seq = seq
            signed += 1
        if progress is not None and checked % 10_000 == 0:
            progress(checked)
    if progress is not None:
        progress(checked)
    last = checker.head_seq
    for seq in sorted(s for s in checkpoints if s > last):
        bad_signature = checkpoint_problem(checkpoints[seq], key_ids)
        if bad_signature is not None:
            return report(seq, bad_signature)
        return report(
            last + 1,
            f"the ledger ends at seq {last} but a signed checkpoint covers seq {seq}: "
            f"records {last + 1}..{seq} were removed",
        )
    if head_row is None:
        return report(last + 1, "the chain head row was deleted")
    head_seq, head_hash = int(head_row[0]), str(head_row[1])
    if head_seq > last:
        return report(
            last + 1,
            f"the ledger ends at seq {last} but its head is at seq {head_seq}: "
            f"records {last + 1}..{head_seq} were removed",
        )
    if head_seq < last:
        return report(
            head_seq + 1,
            f"records {head_seq + 1}..{last} lie beyond the chain head (seq {head_seq}): "
            "they were not appended by the ledger",
        )
    if head_hash != checker.head_hash:
        return report(last, f"the chain head names hash {head_hash} for seq {last}, not its hash")
    return VerifyReport(
        ok=True,
        records=checked,
        checkpoints=signed,
        head_seq=checker.head_seq,
        head_hash=checker.head_hash,
        signed_seq=signed_seq,
    )


def _filters(
    subject_ref: str | None,
    since: datetime | None,
    until: datetime | None,
    kind: str | None,
    decision: str | None,
    more: Mapping[str, str | None] | None = None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = _more_filters(more or {})
    if subject_ref is not None:
        prefix = subject_ref[:SUBJECT_PREFIX_LEN]
        where.append(_subject_prefix(audit_ledger.c.subject_ref) == prefix)
        # "|| ''": a bare `subject_ref = ?` lets SQLite propagate the constant into the prefix
        # expression, which then no longer matches the index
        where.append(audit_ledger.c.subject_ref.concat("") == subject_ref)
    if since is not None:
        where.append(audit_ledger.c.occurred_at >= utc_text(since))
    if until is not None:
        where.append(audit_ledger.c.occurred_at < utc_text(until))
    if kind is not None:
        where.append(audit_ledger.c.kind == kind)
    if decision is not None:
        where.append(audit_ledger.c.decision == decision)
    return where


RECORD_FILTERS = ("reason_code", "role", "source", "purpose", "recipient")
"""Further filters of :func:`iter_records` and :func:`count_records`, by keyword. ``role`` is
the actor's role; ``purpose`` matches a use's or share's purpose and a collection's declared
purposes."""


def _more_filters(more: Mapping[str, str | None]) -> list[ColumnElement[bool]]:
    unknown = set(more) - set(RECORD_FILTERS)
    if unknown:
        raise TypeError(f"unknown record filter(s): {', '.join(sorted(unknown))}")
    where: list[ColumnElement[bool]] = []
    columns = {
        "reason_code": audit_ledger.c.reason_code,
        "role": audit_ledger.c.actor_role,
        "source": audit_ledger.c.source,
        "recipient": audit_ledger.c.recipient,
    }
    for name, value in more.items():
        if value is None:
            continue
        if name == "purpose":
            declared = orjson.dumps(value).decode()  # an element of the canonical JSON array
            where.append(
                (audit_ledger.c.purpose == value)
                | audit_ledger.c.purposes.contains(declared, autoescape=True)
            )
        else:
            where.append(columns[name] == value)
    return where


def iter_records(
    engine: Engine,
    subject_ref: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: str | None = None,
    decision: str | None = None,
    *,
    batch_size: int = 5_000,
    **more: str | None,
) -> Iterator[AuditEntry]:
    """Stream stored records in seq order, filtered (all filters combine with AND).

    ``since``/``until`` bound ``occurred_at`` (when the event happened), half-open:
    ``since <= occurred_at < until``; they must be aware datetimes. ``more``: the filters of
    :data:`RECORD_FILTERS`.
    """
    statement = (
        select(audit_ledger)
        .where(*_filters(subject_ref, since, until, kind, decision, more))
        .order_by(audit_ledger.c.seq)
        .execution_options(yield_per=batch_size)
    )
    try:
        with engine.connect() as conn:
            _require_ledger(conn)
            for row in conn.execute(statement):
                yield AuditEntry(dict(row._mapping))
    except SQLAlchemyError as exc:
        raise _ledger_error(exc, "read") from exc


def count_records(
    engine: Engine,
    subject_ref: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: str | None = None,
    decision: str | None = None,
    **more: str | None,
) -> int:
    """How many records :func:`iter_records` would yield with the same filters."""
    statement = (
        select(func.count())
        .select_from(audit_ledger)
        .where(*_filters(subject_ref, since, until, kind, decision, more))
    )
    try:
        with engine.connect() as conn:
            _require_ledger(conn)
            return int(conn.execute(statement).scalar_one())
    except SQLAlchemyError as exc:
        raise _ledger_error(exc, "count") from exc


__all__ = [
    "APPEND_ONLY_TABLES",
    "RECORD_FILTERS",
    "AuditSink",
    "Clock",
    "SqlAuditSink",
    "audit_chain_head",
    "audit_checkpoints",
    "audit_ledger",
    "count_records",
    "create_ledger",
    "iter_records",
    "open_audit_sink",
    "read_checkpoints",
    "read_transaction",
    "require_ledger",
    "tree_frontier",
    "verify",
]
