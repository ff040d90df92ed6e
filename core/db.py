"""One SQLAlchemy engine factory for the key store and the audit ledger.

SQLite (the default, a file under ``LIFECYCLE_DATA_DIR``) runs in WAL mode with a busy timeout,
so a publisher, workers and the command line can share it, and with ``secure_delete`` so that a
shredded key's bytes are overwritten rather than left in free pages. Any other SQLAlchemy URL
(PostgreSQL in production) is used as given.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url

from core.retry import retry_call


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; creates the SQLite file's folder when needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    return create_engine(url, pool_pre_ping=True, **kwargs)


_WAL_SWITCH_SECONDS = 30.0
BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite statement waits for a lock another connection holds."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA secure_delete=ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """Put the file in WAL mode (a no-op once it is). Switching needs the file to itself and
    SQLite answers "database is locked" at once, without its busy handler, while another
    process holds it (several processes opening a new file together), so retry."""
    retry_call(
        lambda: cursor.execute("PRAGMA journal_mode=WAL"),
        on=_locked,
        first=0.01,
        most=0.5,
        within=_WAL_SWITCH_SECONDS,
    )


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


_PG_DDL_LOCK = 0x6C69666563796331  # pg_advisory_xact_lock key shared by every schema creator


@contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's schema lock, committed on exit:
    several processes starting at once create tables one after another instead of racing
    (SQLite: the write lock, ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory
    lock, DDL being transactional there)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_DDL_LOCK})
        yield conn
        conn.commit()


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """``metadata.create_all`` under :func:`schema_lock`."""
    with schema_lock(engine) as conn:
        metadata.create_all(conn)
