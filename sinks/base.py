"""What an audit sink is: where decisions land, hash-chained, exactly once each. The SQL
ledger (:mod:`sinks.ledger`) is the real one; :mod:`sinks.memory` holds one for unit tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sinks.checkpoints import (
    Checkpoint,
)
from sinks.entry import AuditEntry


class AuditSink(Protocol):
    """Where decisions land, hash-chained, exactly once each."""

    def append(self, decisions: Sequence[Mapping[str, Any]]) -> list[AuditEntry]:
        """Record decoded ``lifecycle.Decision`` values; durable when this returns.

        Returns the stored entry of every input, in input order; a decision whose
        ``event_id`` is already recorded adds nothing and gets the stored entry back.
        """
        ...

    def recorded_events(self, event_ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
        """event_id -> (subject_ref, kind, seq) for those of ``event_ids`` already recorded."""
        ...

    def checkpoint(self, *, only_if_due: bool = False) -> Checkpoint | None:
        """Sign the chain head now (or only when due); None while the ledger is empty."""
        ...

    def close(self) -> None:
        """Sign the head when records are unsigned, and release resources."""
        ...
