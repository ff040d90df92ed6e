"""Reading the ledger's records: filtered, in seq order, streamed; and counting them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypedDict, Unpack

from sqlalchemy import (
    Connection,
    Engine,
    func,
    inspect,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from sinks.entry import AuditEntry
from sinks.exceptions import LedgerError
from sinks.ledger.tables import (
    SUBJECT_PREFIX_LEN,
    audit_ledger,
    ledger_error,
    metadata,
    subject_prefix,
)
from sinks.stored import utc_text


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
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


def require_ledger(conn: Connection) -> None:
    names = set(inspect(conn).get_table_names())
    missing = {t.name for t in metadata.sorted_tables} - names
    if missing:
        tables = ", ".join(sorted(missing))
        raise LedgerError(f"no audit ledger in this database (missing {tables})")


class RecordFilters(TypedDict, total=False):
    """Which records to read (all given ones combine with AND). ``since``/``until`` bound
    ``occurred_at`` (when the event happened), half-open: ``since <= occurred_at < until``;
    they must be aware datetimes."""

    subject_ref: str | None
    since: datetime | None
    until: datetime | None
    kind: str | None
    decision: str | None


def _filters(filters: RecordFilters) -> list[ColumnElement[bool]]:
    subject_ref = filters.get("subject_ref")
    since, until = filters.get("since"), filters.get("until")
    kind, decision = filters.get("kind"), filters.get("decision")
    where: list[ColumnElement[bool]] = []
    if subject_ref is not None:
        prefix = subject_ref[:SUBJECT_PREFIX_LEN]
        where.append(subject_prefix(audit_ledger.c.subject_ref) == prefix)
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


def iter_records(
    engine: Engine, *, batch_size: int = 5_000, **filters: Unpack[RecordFilters]
) -> Iterator[AuditEntry]:
    """Stream stored records in seq order, filtered (see :class:`RecordFilters`)."""
    statement = (
        select(audit_ledger)
        .where(*_filters(filters))
        .order_by(audit_ledger.c.seq)
        .execution_options(yield_per=batch_size)
    )
    try:
        with engine.connect() as conn:
            require_ledger(conn)
            for row in conn.execute(statement):
                yield AuditEntry(dict(row._mapping))
    except SQLAlchemyError as exc:
        raise ledger_error(exc, "read") from exc


def count_records(engine: Engine, **filters: Unpack[RecordFilters]) -> int:
    """How many records :func:`iter_records` would yield with the same filters."""
    statement = select(func.count()).select_from(audit_ledger).where(*_filters(filters))
    try:
        with engine.connect() as conn:
            require_ledger(conn)
            return int(conn.execute(statement).scalar_one())
    except SQLAlchemyError as exc:
        raise ledger_error(exc, "count") from exc
