"""Reading the ledger's records: filtered, in seq order, streamed; and counting them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypedDict, Unpack

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    func,
    inspect,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from sinks.checkpoints import Checkpoint
from sinks.entry import AuditEntry
from sinks.exceptions import LedgerError
from sinks.ledger.tables import (
    SUBJECT_PREFIX_LEN,
    audit_checkpoints,
    audit_ledger,
    checkpoint_of,
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
    they must be aware datetimes. ``role`` is the actor's role; ``purpose`` matches a use's or
    share's purpose and a collection's declared purposes."""

    subject_ref: str | None
    since: datetime | None
    until: datetime | None
    kind: str | None
    decision: str | None
    reason_code: str | None
    role: str | None
    source: str | None
    purpose: str | None
    recipient: str | None


RECORD_FILTERS = ("reason_code", "role", "source", "purpose", "recipient")
"""The filters of :class:`RecordFilters` that match one column's text exactly (the export's
``--reason-code``, ``--role``, ``--source``, ``--purpose`` and ``--recipient``)."""

_EXACT = {
    "reason_code": audit_ledger.c.reason_code,
    "role": audit_ledger.c.actor_role,
    "source": audit_ledger.c.source,
    "recipient": audit_ledger.c.recipient,
}


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
    for name, column in _EXACT.items():
        value = filters.get(name)
        if value is not None:
            where.append(column == value)
    purpose = filters.get("purpose")
    if purpose is not None:
        declared = orjson.dumps(purpose).decode()  # an element of the canonical JSON array
        where.append(
            (audit_ledger.c.purpose == purpose)
            | audit_ledger.c.purposes.contains(declared, autoescape=True)
        )
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
    return {int(row.seq): checkpoint_of(dict(row._mapping)) for row in conn.execute(statement)}
