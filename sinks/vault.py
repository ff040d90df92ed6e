"""The vault: the current (encrypted) value of each category held for each subject.

It is what an access request reads ("what is held") and what rectification updates: a newer
collection of a category replaces the older value. Values stay encrypted under the subject's
data keys, so shredding a key makes the vault's copy unreadable at the same moment as every
copy on the topics; erasure then also deletes the rows (a derived copy that has no further use).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from core.db import create_tables

metadata = MetaData()

held_values = Table(
    "held_values",
    metadata,
    Column("subject_ref", String(64), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("event_id", String(128), nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("collected_at", DateTime(timezone=True), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("purposes", Text, nullable=False),  # JSON list
)


@dataclass(frozen=True, slots=True)
class HeldValue:
    subject_ref: str
    category: str
    event_id: str
    key_version: int
    nonce: bytes
    ciphertext: bytes
    collected_at: datetime
    channel: str
    purposes: tuple[str, ...]

    def encrypted_value(self) -> dict[str, object]:
        return {
            "category": self.category,
            "key_version": self.key_version,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }


class Vault:
    """Encrypted current values per (subject_ref, category), in the pipeline's database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        create_tables(engine, metadata)
        dialect = engine.dialect.name
        self._insert: Any = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]

    def hold(self, values: Sequence[HeldValue]) -> None:
        """Store values; a newer collection of a category replaces the older one."""
        if not values:
            return
        latest: dict[tuple[str, str], HeldValue] = {}
        for value in values:
            key = (value.subject_ref, value.category)
            if key not in latest or value.collected_at >= latest[key].collected_at:
                latest[key] = value
        rows = [
            {
                "subject_ref": v.subject_ref,
                "category": v.category,
                "event_id": v.event_id,
                "key_version": v.key_version,
                "nonce": v.nonce,
                "ciphertext": v.ciphertext,
                "collected_at": v.collected_at,
                "channel": v.channel,
                "purposes": orjson.dumps(list(v.purposes)).decode(),
            }
            for v in latest.values()
        ]
        statement = self._insert(held_values)
        newer = statement.excluded.collected_at >= held_values.c.collected_at
        statement = statement.on_conflict_do_update(
            index_elements=["subject_ref", "category"],
            set_={
                name: statement.excluded[name]
                for name in rows[0]
                if name not in ("subject_ref", "category")
            },
            where=newer,
        )
        with self._engine.begin() as conn:
            conn.execute(statement, rows)

    def release(self, subject_ref: str, categories: Iterable[str] | None = None) -> int:
        """Delete held values (all categories when None); how many rows went."""
        condition = held_values.c.subject_ref == subject_ref
        if categories is not None:
            condition = and_(condition, held_values.c.category.in_(list(categories)))
        with self._engine.begin() as conn:
            return conn.execute(delete(held_values).where(condition)).rowcount

    def held(self, subject_ref: str) -> list[HeldValue]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(held_values)
                .where(held_values.c.subject_ref == subject_ref)
                .order_by(held_values.c.category)
            ).all()
        return [
            HeldValue(
                r.subject_ref,
                r.category,
                r.event_id,
                r.key_version,
                r.nonce,
                r.ciphertext,
                r.collected_at,
                r.channel,
                tuple(orjson.loads(r.purposes)),
            )
            for r in rows
        ]
