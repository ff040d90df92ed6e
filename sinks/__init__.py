"""Where results land: the tamper-evident audit ledger, the vault of held values, and what
reads them back. Sinks record; they never decide.

* :mod:`sinks.base`: the :class:`AuditSink` protocol.
* :mod:`sinks.stored`, :mod:`sinks.canonical`, :mod:`sinks.entry`: a record's stored form, its
  canonical encoding and hash, and the read-only entry.
* :mod:`sinks.chain`: checking the chain (:class:`ChainFollower` for replays).
* :mod:`sinks.checkpoints`: Ed25519-signed checkpoints and their key files.
* :mod:`sinks.ledger`: :class:`SqlAuditSink`, :func:`verify`, :func:`iter_records`.
* :mod:`sinks.memory`: :class:`MemoryAuditSink` for unit tests.
* :mod:`sinks.vault`, :mod:`sinks.export`, :mod:`sinks.replay`, :mod:`sinks.recovery`: held
  values, exports, ``audit replay`` and bringing a restored ledger forward.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sinks.canonical import GENESIS_HASH, canonical_bytes, row_hash
    from sinks.chain import ChainFollower, ChainProblem, VerifyReport
    from sinks.checkpoints import (
        Checkpoint,
        CheckpointSigner,
        load_public_key,
        load_signing_key,
        public_key_path,
    )
    from sinks.entry import AuditEntry
    from sinks.exceptions import (
        InvalidDecisionError,
        LedgerError,
        LedgerUnavailableError,
        SigningKeyError,
        SinkError,
    )
    from sinks.ledger import (
        AuditSink,
        SqlAuditSink,
        count_records,
        create_ledger,
        iter_records,
        open_audit_sink,
        verify,
    )
    from sinks.memory import MemoryAuditSink

# Loaded on first use: a process that needs only the canonical encoding (a verify helper)
# starts without the database and signing libraries.
_EXPORTS = {
    "AuditEntry": "sinks.entry",
    "AuditSink": "sinks.ledger",
    "ChainFollower": "sinks.chain",
    "ChainProblem": "sinks.chain",
    "Checkpoint": "sinks.checkpoints",
    "CheckpointSigner": "sinks.checkpoints",
    "GENESIS_HASH": "sinks.canonical",
    "InvalidDecisionError": "sinks.exceptions",
    "LedgerError": "sinks.exceptions",
    "LedgerUnavailableError": "sinks.exceptions",
    "MemoryAuditSink": "sinks.memory",
    "SigningKeyError": "sinks.exceptions",
    "SinkError": "sinks.exceptions",
    "SqlAuditSink": "sinks.ledger",
    "VerifyReport": "sinks.chain",
    "canonical_bytes": "sinks.canonical",
    "count_records": "sinks.ledger",
    "create_ledger": "sinks.ledger",
    "iter_records": "sinks.ledger",
    "load_public_key": "sinks.checkpoints",
    "load_signing_key": "sinks.checkpoints",
    "open_audit_sink": "sinks.ledger",
    "public_key_path": "sinks.checkpoints",
    "row_hash": "sinks.canonical",
    "verify": "sinks.ledger",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sinks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditSink",
    "ChainFollower",
    "ChainProblem",
    "Checkpoint",
    "CheckpointSigner",
    "InvalidDecisionError",
    "LedgerError",
    "LedgerUnavailableError",
    "MemoryAuditSink",
    "SigningKeyError",
    "SinkError",
    "SqlAuditSink",
    "VerifyReport",
    "canonical_bytes",
    "count_records",
    "create_ledger",
    "iter_records",
    "load_public_key",
    "load_signing_key",
    "open_audit_sink",
    "public_key_path",
    "row_hash",
    "verify",
]
