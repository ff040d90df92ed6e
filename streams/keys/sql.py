"""Keys in a SQLAlchemy database (a SQLite file by default, PostgreSQL in production).

Shredding a category sets its wrapped key to NULL: every copy of every value encrypted under
it, on any topic or table, is unreadable from then on, and a later collection gets a new key
version, so erased values never come back. On SQLite the shredded key's bytes are also wiped
from the file and its write-ahead log.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core.db import BUSY_TIMEOUT_MS, create_tables
from core.logging import get_logger
from streams.exceptions import KeyStoreError
from streams.keys.base import SKIPPED, KeyRecord, Shredding, VersionRef, Versions
from streams.keys.master import load_master_key
from streams.keys.rotation import rotate_master_key
from streams.keys.tables import WRAPPED_KEY_COLUMNS, data_keys, keystore_meta, metadata
from streams.keys.wrapping import EnvelopeKeyStore, live_chunks

log = get_logger(__name__)

WIPE_RETRY = 0.05
"""Seconds between attempts to empty the write-ahead log after a shred (SQLite)."""
WIPE_PATIENCE = 30.0
"""Seconds of attempts before a wipe is given up (logged); the next shred starts another."""


class SqlKeyStore(EnvelopeKeyStore):
    """Keys in a SQLAlchemy database (SQLite file by default, PostgreSQL in production)."""

    def __init__(self, engine: Engine, master_key: bytes, **kwargs: Any) -> None:
        self._engine = engine
        self._wiper = ThreadPoolExecutor(1, thread_name_prefix="key-wipe")
        self._wiping: Future[None] | None = None
        self._wipe_again = False
        try:
            create_tables(engine, metadata)
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store database unreachable: {exc}") from exc
        super().__init__(master_key, **kwargs)

    def _get_meta(self, name: str) -> bytes | None:
        with self._engine.connect() as conn:
            value = conn.execute(
                select(keystore_meta.c.value).where(keystore_meta.c.name == name)
            ).scalar_one_or_none()
        return value

    def _put_meta_if_absent(self, name: str, value: bytes) -> bytes:
        existing = self._get_meta(name)
        if existing is not None:
            return existing
        try:
            with self._engine.begin() as conn:
                conn.execute(keystore_meta.insert().values(name=name, value=value))
        except IntegrityError:
            pass  # another process stored it first
        stored = self._get_meta(name)
        assert stored is not None
        return stored

    def _load_current(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, bytes | None]]:
        out: dict[tuple[str, str], tuple[int, bytes | None]] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(pairs), 500):
                chunk = pairs[start : start + 500]
                rows = conn.execute(
                    select(*WRAPPED_KEY_COLUMNS)
                    # two plain INs use the primary key's index; SQLite scans the whole table
                    # for a row-value IN (EXPLAIN QUERY PLAN: SCAN data_keys)
                    .where(data_keys.c.subject_ref.in_({ref for ref, _ in chunk}))
                    .where(data_keys.c.category.in_({cat for _, cat in chunk}))
                )
                wanted = set(chunk)
                for ref, cat, version, wrapped in rows:
                    if (ref, cat) in wanted and version > out.get((ref, cat), (0, None))[0]:
                        out[(ref, cat)] = (version, wrapped)
        return out

    def _insert_keys(self, rows: Sequence[tuple[str, str, int, bytes]]) -> None:
        values = _key_rows(rows)
        try:
            with self._engine.begin() as conn:  # the common case: one transaction for all
                conn.execute(data_keys.insert(), values)
            return
        except IntegrityError:
            pass
        for row in values:  # another process created some of them first: keep theirs
            try:
                with self._engine.begin() as conn:
                    conn.execute(data_keys.insert(), row)
            except IntegrityError:
                continue

    def _insert_versions(self, rows: Sequence[tuple[str, str, int, bytes | None]]) -> bool:
        values = _key_rows(rows)
        try:
            with self._engine.begin() as conn:
                conn.execute(data_keys.insert(), values)
        except IntegrityError:
            return False
        return True

    def _load_versions(self, versions: Sequence[VersionRef]) -> dict[VersionRef, bytes | None]:
        out: dict[VersionRef, bytes | None] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(versions), 500):
                chunk = versions[start : start + 500]
                wanted = set(chunk)
                rows = conn.execute(
                    select(*WRAPPED_KEY_COLUMNS)
                    # plain INs, as in _load_current (the primary key's index)
                    .where(data_keys.c.subject_ref.in_({ref for ref, _, _ in chunk}))
                    .where(data_keys.c.category.in_({cat for _, cat, _ in chunk}))
                    .where(data_keys.c.version.in_({version for _, _, version in chunk}))
                )
                for ref, cat, version, wrapped in rows:
                    if (ref, cat, version) in wanted:
                        out[(ref, cat, version)] = wrapped
        return out

    def _load_wrapped(self, subject_ref: str, category: str, version: int) -> bytes | None:
        with self._engine.connect() as conn:
            value = conn.execute(
                select(data_keys.c.wrapped_key).where(
                    and_(
                        data_keys.c.subject_ref == subject_ref,
                        data_keys.c.category == category,
                        data_keys.c.version == version,
                    )
                )
            ).scalar_one_or_none()
        return value

    def _iter_live(self, chunk: int) -> Iterable[list[tuple[str, str, int, bytes]]]:
        # One short read per chunk, by key range, rather than one cursor over the whole
        # table: a long-lived snapshot would hold off the WAL checkpoint that wipes shredded
        # keys from disk (SQLite) and keep old row versions alive (PostgreSQL).
        columns = WRAPPED_KEY_COLUMNS
        ordered = select(*columns).order_by(*columns[:3])  # the primary key's order
        after = ""
        while True:
            with self._engine.connect() as conn:
                rows = [
                    tuple(row)
                    for row in conn.execute(
                        ordered.where(data_keys.c.subject_ref > after).limit(chunk)
                    )
                ]
                last_page = len(rows) < chunk
                if not last_page:  # the last customer may go on: keep only whole customers
                    cut = rows[-1][0]
                    rows = [row for row in rows if row[0] != cut] or [
                        tuple(row)
                        for row in conn.execute(ordered.where(data_keys.c.subject_ref == cut))
                    ]
            if rows:
                yield from live_chunks(rows, len(rows))  # type: ignore[arg-type]
            if last_page or not rows:
                return
            after = rows[-1][0]

    def _destroy(self, shredding: Shredding) -> list[str]:
        categories, before = shredding.categories, shredding.created_before
        live = and_(
            data_keys.c.subject_ref == shredding.subject_ref, data_keys.c.wrapped_key.is_not(None)
        )
        if categories is not None:
            live = and_(live, data_keys.c.category.in_(list(categories)))
        if before is not None:
            live = and_(live, data_keys.c.created_at < before)
        with self._engine.begin() as conn:
            shredded = sorted(set(conn.execute(select(data_keys.c.category).where(live)).scalars()))
            conn.execute(
                update(data_keys)
                .where(live)
                .values(
                    wrapped_key=None, shredded_at=datetime.now(UTC), shred_reason=shredding.reason
                )
            )
        if shredded and self._engine.dialect.name == "sqlite":
            self._wipe_soon()
        return shredded

    def _destroy_versions(
        self, subject_ref: str, selection: Mapping[str, Versions], reason: str
    ) -> dict[str, list[int]]:
        chosen = [
            and_(
                data_keys.c.category == category,
                or_(
                    data_keys.c.version <= versions.through,
                    data_keys.c.version.in_(sorted(versions.exactly)),
                ),
            )
            for category, versions in selection.items()
        ]
        live = and_(
            data_keys.c.subject_ref == subject_ref,
            data_keys.c.wrapped_key.is_not(None),
            or_(*chosen),
        )
        destroyed: dict[str, list[int]] = {}
        with self._engine.begin() as conn:
            found = conn.execute(
                select(data_keys.c.category, data_keys.c.version)
                .where(live)
                .order_by(data_keys.c.category, data_keys.c.version)
            ).all()
            for category, version in found:
                destroyed.setdefault(category, []).append(version)
            if found:
                conn.execute(
                    update(data_keys)
                    .where(live)
                    .values(wrapped_key=None, shredded_at=datetime.now(UTC), shred_reason=reason)
                )
        if destroyed and self._engine.dialect.name == "sqlite":
            self._wipe_soon()
        return destroyed

    def _wipe_soon(self) -> None:
        """Overwrite the old pages in the main file and empty the write-ahead log, so no copy
        of a shredded wrapped key survives on disk (secure_delete zeroes freed content).

        It runs in a thread of its own instead of holding up the erasure (the shred itself is
        already committed). A TRUNCATE checkpoint needs a moment with no writer and no reader
        of an older snapshot; waiting for one through the busy handler would stop every
        other writer meanwhile (the ledger, the vault, the next shred), for as long as a
        second with the ledger writing all the time. So each attempt takes no wait: when it
        cannot finish it copies what it can, and the next comes :data:`WIPE_RETRY` seconds
        later, until the log is empty or :data:`WIPE_PATIENCE` seconds have passed."""
        with self._lock:
            if self._wiping is not None and not self._wiping.done():
                self._wipe_again = True
                return
            self._wiping = self._wiper.submit(self._wipe)

    def _wipe(self) -> None:
        while True:
            with self._lock:
                self._wipe_again = False
            give_up = time.monotonic() + WIPE_PATIENCE
            try:
                while not self._checkpoint():
                    if time.monotonic() >= give_up:
                        log.warning("keys.wipe_incomplete", waited_s=WIPE_PATIENCE)
                        break
                    time.sleep(WIPE_RETRY)
            except SQLAlchemyError as exc:
                log.warning("keys.wipe_failed", error=type(exc).__name__)
            with self._lock:
                if not self._wipe_again:
                    return

    def _checkpoint(self) -> bool:
        """One TRUNCATE checkpoint that waits for no one; True when the log was emptied."""
        with self._engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            try:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").scalar()
            finally:  # the connection goes back to the pool
                conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return not busy

    def wait_for_wipe(self, timeout: float = 60.0) -> None:
        """Block until the on-disk wipe after the last shred finished (tests, shutdown)."""
        with self._lock:
            wiping = self._wiping
        if wiping is not None:
            wiping.result(timeout)

    def keys_of(self, subject_ref: str) -> list[KeyRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    data_keys.c.subject_ref,
                    data_keys.c.category,
                    data_keys.c.version,
                    data_keys.c.created_at,
                    data_keys.c.shredded_at,
                    data_keys.c.shred_reason,
                )
                .where(data_keys.c.subject_ref == subject_ref)
                .order_by(data_keys.c.category, data_keys.c.version)
            ).all()
        return [KeyRecord(*row) for row in rows]

    def rotate_master_key(self, batch: int = 1_000) -> int:
        """Re-wrap every live data key (and the store's own keys) under the current master key;
        how many were re-wrapped (see :func:`streams.keys.rotation.rotate_master_key`)."""
        return rotate_master_key(self, self._engine, batch)


def _key_rows(rows: Sequence[tuple[str, str, int, bytes | None]]) -> list[dict[str, Any]]:
    """``data_keys`` rows for new versions; one without a wrapped key reserves its number
    (:data:`~streams.keys.base.SKIPPED`)."""
    now = datetime.now(UTC)
    return [
        {
            "subject_ref": ref,
            "category": cat,
            "version": version,
            "wrapped_key": wrapped,
            "created_at": now,
            "shredded_at": now if wrapped is None else None,
            "shred_reason": SKIPPED if wrapped is None else None,
        }
        for ref, cat, version, wrapped in rows
    ]


def open_keystore(
    engine: Engine,
    master_key_file: Path,
    previous_master_key_file: Path | None = None,
    **kwargs: Any,
) -> SqlKeyStore:
    """The configured key store: master key from its file (created when absent), and during a
    rotation the previous one (never created)."""
    previous = (
        [load_master_key(previous_master_key_file, create=False)]
        if previous_master_key_file is not None
        else []
    )
    return SqlKeyStore(
        engine, load_master_key(master_key_file), previous_master_keys=previous, **kwargs
    )
