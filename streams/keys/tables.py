"""The key store's tables: its own metadata (the key-check value, the wrapped pseudonym key) and
one row per data key version, whose wrapped key is set to NULL when it is shredded."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

metadata = MetaData()


keystore_meta = Table(
    "keystore_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)


data_keys = Table(
    "data_keys",
    metadata,
    Column("subject_ref", String(64), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("wrapped_key", LargeBinary, nullable=True),  # NULL once shredded
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("shredded_at", DateTime(timezone=True), nullable=True),
    Column("shred_reason", String(64), nullable=True),
)


WRAPPED_KEY_COLUMNS = (
    data_keys.c.subject_ref,
    data_keys.c.category,
    data_keys.c.version,
    data_keys.c.wrapped_key,
)
"""A data key version and its wrapped key, as the stores read them."""
