"""An in-memory :class:`~sinks.base.AuditSink` for unit tests of code that appends decisions.

Same chain, same idempotency, same checkpoint schedule as :class:`~sinks.ledger.SqlAuditSink`;
nothing survives the process. ``verify`` checks what it holds the way the database verify does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.clock import Clock, SystemClock
from sinks.canonical import GENESIS_HASH, chain_rows, row_hash
from sinks.chain import ChainChecker, VerifyReport
from sinks.checkpoints import (
    Checkpoint,
    CheckpointSigner,
    checkpoint_due,
    checkpoint_problem,
    key_id_of,
)
from sinks.entry import AuditEntry
from sinks.exceptions import LedgerError
from sinks.stored import decision_row, truncate_millis, utc_text


class MemoryAuditSink:
    """Entries in a list, checkpoints in another; thread-safe."""

    def __init__(
        self,
        signer: CheckpointSigner | None = None,
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self.signer = signer or CheckpointSigner.generate()
        self.entries: list[AuditEntry] = []
        self.checkpoints: list[Checkpoint] = []
        self._by_event: dict[str, AuditEntry] = {}
        self._every = checkpoint_every
        self._interval = timedelta(seconds=checkpoint_interval)
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._closed = False

    def append(self, decisions: Sequence[Mapping[str, Any]]) -> list[AuditEntry]:
        rows = [decision_row(decision, index) for index, decision in enumerate(decisions)]
        with self._lock:
            if self._closed:
                raise LedgerError("the audit sink is closed")
            new: list[dict[str, Any]] = []
            seen: set[str] = set()
            for row in rows:
                if row["event_id"] not in self._by_event and row["event_id"] not in seen:
                    seen.add(row["event_id"])
                    new.append(row)
            if new:
                now = truncate_millis(self._clock())
                head_seq, head_hash = self._head()
                head_seq, head_hash = chain_rows(new, head_seq, head_hash, utc_text(now))
                for row in new:
                    entry = AuditEntry(row)
                    self.entries.append(entry)
                    self._by_event[entry.event_id] = entry
                if checkpoint_due(head_seq, self._last(), now, self._every, self._interval):
                    self.checkpoints.append(self.signer.sign(head_seq, head_hash, now))
            return [self._by_event[row["event_id"]] for row in rows]

    def recorded_events(self, event_ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
        with self._lock:
            found = [self._by_event.get(event_id) for event_id in event_ids]
        return {
            entry.event_id: (entry.subject_ref, str(entry.stored()["kind"]), entry.seq)
            for entry in found
            if entry is not None
        }

    def checkpoint(self, *, only_if_due: bool = False) -> Checkpoint | None:
        with self._lock:
            now = truncate_millis(self._clock())
            head_seq, head_hash = self._head()
            if only_if_due and not checkpoint_due(
                head_seq, self._last(), now, self._every, self._interval
            ):
                return None
            if head_seq == 0:
                return None
            if self.checkpoints and self.checkpoints[-1].seq >= head_seq:
                return self.checkpoints[-1]
            checkpoint = self.signer.sign(head_seq, head_hash, now)
            self.checkpoints.append(checkpoint)
            return checkpoint

    def close(self) -> None:
        if not self._closed:
            self.checkpoint()
            self._closed = True

    def verify(self, public_key: Ed25519PublicKey | None = None) -> VerifyReport:
        """Check the chain and the checkpoints (against the signer's key unless given one)."""
        key = public_key or self.signer.public_key
        keys = {key_id_of(key): key}
        with self._lock:
            entries = list(self.entries)
            checkpoints = {cp.seq: cp for cp in self.checkpoints}
        checker = ChainChecker()
        signed_seq = signed = 0
        for entry in entries:
            row = entry.stored()
            problem = checker.check(entry.seq, entry.prev_hash, entry.hash, row_hash(row))
            if problem is None and entry.seq in checkpoints:
                checkpoint = checkpoints[entry.seq]
                message = checkpoint_problem(checkpoint, keys)
                if message is None and checkpoint.head_hash != entry.hash:
                    message = f"the chain does not match the signed checkpoint at seq {entry.seq}"
                if message is not None:
                    return VerifyReport(False, checker.head_seq, signed, entry.seq, message)
                signed_seq, signed = entry.seq, signed + 1
            if problem is not None:
                return VerifyReport(False, checker.head_seq, signed, problem.seq, problem.message)
        return VerifyReport(
            ok=True,
            records=len(entries),
            checkpoints=signed,
            head_seq=checker.head_seq,
            head_hash=checker.head_hash,
            signed_seq=signed_seq,
        )

    def _head(self) -> tuple[int, str]:
        if not self.entries:
            return 0, GENESIS_HASH
        last = self.entries[-1]
        return last.seq, last.hash

    def _last(self) -> tuple[int, str] | None:
        return (
            None
            if not self.checkpoints
            else (
                self.checkpoints[-1].seq,
                self.checkpoints[-1].signed_at,
            )
        )
