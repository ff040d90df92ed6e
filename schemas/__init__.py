"""Avro schemas of everything that travels on the bus (``*.avsc``, one named type a file).

``history/`` keeps a self-contained snapshot of every released version of each topic schema,
so that records written by older producers keep decoding (see tests/streams/test_schemas.py).
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
HISTORY_DIR = SCHEMA_DIR / "history"

# The record types that are the values of topics (the others are nested in them).
TOPIC_RECORDS = (
    "lifecycle.CustomerEvent",
    "lifecycle.Decision",
    "lifecycle.AuditRecord",
    "lifecycle.DeletionConfirmation",
    "lifecycle.KeyRevocation",
    "lifecycle.RetentionSweep",
)

__all__ = ["HISTORY_DIR", "SCHEMA_DIR", "TOPIC_RECORDS"]
