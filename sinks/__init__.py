"""Where results land: the tamper-evident audit ledger (and its in-memory double).

* :mod:`sinks.chain`: canonical encoding, hashing, :class:`ChainFollower` for replays.
* :mod:`sinks.checkpoints`: Ed25519-signed checkpoints and their key files.
* :mod:`sinks.ledger`: :class:`SqlAuditSink`, :func:`verify`, :func:`iter_records`.
* :mod:`sinks.memory`: :class:`MemoryAuditSink` for unit tests.
"""

from __future__ import annotations

from sinks.chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainFollower,
    ChainProblem,
    VerifyReport,
    canonical_bytes,
    row_hash,
)
from sinks.checkpoints import (
    Checkpoint,
    CheckpointSigner,
    load_public_key,
    load_signing_key,
    public_key_path,
)
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
