"""The ledger's tables, and the triggers that keep them append-only.

* ``audit_ledger``: one row per decision, in the stored form of :mod:`sinks.stored`. ``seq`` is
  global and gapless from 1; ``event_id`` is unique, which makes a redelivered decision a no-op.
* ``audit_checkpoints``: signed statements over the chain head (:mod:`sinks.checkpoints`).
* ``audit_chain_head``: one row (seq, hash of the last record); the lock every append takes.

Triggers refuse UPDATE and DELETE on ``audit_ledger`` and ``audit_checkpoints`` (and TRUNCATE on
PostgreSQL), and DELETE of the head row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from core.db import schema_lock
from sinks.canonical import GENESIS_HASH
from sinks.checkpoints import (
    Checkpoint,
)
from sinks.exceptions import LedgerError, LedgerUnavailableError

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


def subject_prefix(column: ColumnElement[str]) -> ColumnElement[str]:
    # literal arguments, so the index expression and the query's are the same text
    return func.substr(column, literal_column("1"), literal_column(str(SUBJECT_PREFIX_LEN)))


# The subject index holds the first 16 hex digits (64 bits) of the pseudonym: as selective as
# the whole HMAC, a quarter of its size, which keeps appends fast.
Index("ix_audit_ledger_subject_prefix", subject_prefix(audit_ledger.c.subject_ref))


audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("signed_at", String(24), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", Text, nullable=False),
)


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


IN_CHUNK = 500


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
            if conn.execute(select(audit_chain_head.c.id)).first() is None:
                last = conn.execute(
                    select(audit_ledger.c.seq, audit_ledger.c.hash)
                    .order_by(audit_ledger.c.seq.desc())
                    .limit(1)
                ).first()
                seq, hash_ = (0, GENESIS_HASH) if last is None else (int(last[0]), str(last[1]))
                conn.execute(audit_chain_head.insert().values(id=1, seq=seq, hash=hash_))
    except SQLAlchemyError as exc:
        raise ledger_error(exc, "create") from exc


def checkpoint_of(row: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(
        seq=int(row["seq"]),
        head_hash=str(row["head_hash"]),
        signed_at=str(row["signed_at"]),
        key_id=str(row["key_id"]),
        signature=str(row["signature"]),
    )


def ledger_error(exc: SQLAlchemyError, action: str) -> LedgerError:
    # The driver's own message only: SQLAlchemy's would list every parameter of the batch.
    orig = getattr(exc, "orig", None) or exc
    detail = f"{type(orig).__name__}: {str(orig).strip().splitlines()[0] if str(orig) else ''}"
    if isinstance(exc, OperationalError | InterfaceError) or getattr(
        exc, "connection_invalidated", False
    ):
        return LedgerUnavailableError(f"audit ledger database unavailable ({action}): {detail}")
    return LedgerError(f"audit ledger {action} failed: {detail}")
