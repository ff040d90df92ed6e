"""The audit ledger in a SQLAlchemy database (SQLite by default, PostgreSQL in production).

* :mod:`sinks.ledger.tables`: the tables and the triggers that keep them append-only;
* :mod:`sinks.ledger.store`: :class:`SqlAuditSink`, which appends, and the lookups before it;
* :mod:`sinks.ledger.queries`: records read back, filtered, in seq order;
* :mod:`sinks.ledger.verify`: every hash, link and signed checkpoint checked.
"""

from __future__ import annotations

from sinks.base import AuditSink
from sinks.ledger.queries import count_records, iter_records
from sinks.ledger.store import AuditLedger, SqlAuditSink, open_audit_sink
from sinks.ledger.tables import (
    APPEND_ONLY_TABLES,
    audit_chain_head,
    audit_checkpoints,
    audit_ledger,
    create_ledger,
)
from sinks.ledger.verify import verify

__all__ = [
    "APPEND_ONLY_TABLES",
    "AuditLedger",
    "AuditSink",
    "SqlAuditSink",
    "audit_chain_head",
    "audit_checkpoints",
    "audit_ledger",
    "count_records",
    "create_ledger",
    "iter_records",
    "open_audit_sink",
    "verify",
]
