"""Checking the hash chain: :class:`ChainChecker` walks records in seq order and names the first
that breaks it, for ``verify`` (reading the database) and :class:`ChainFollower` (reading
``privacy.audit``, where records may repeat or arrive a little out of order).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sinks.canonical import GENESIS_HASH, row_hash
from sinks.stored import audit_record_row


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Where a chain first goes wrong, and what is wrong there."""

    seq: int
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of checking a ledger (or a replayed stream).

    ``first_bad_seq`` is the first seq at which the records are provably inconsistent;
    ``problem`` says what was found there. ``head_seq``/``head_hash`` are those of the last
    record that verified; ``signed_seq`` is the seq of the last signed checkpoint that matched
    the chain.
    """

    ok: bool
    records: int
    checkpoints: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    signed_seq: int = 0

    def summary(self) -> str:
        """One line for a human: what was checked, and the first problem if any."""
        if self.ok:
            unsigned = self.head_seq - self.signed_seq
            tail = f", {unsigned} after it not yet signed" if unsigned else ""
            return (
                f"ok: {self.records} records, {self.checkpoints} signed checkpoints verified; "
                f"head seq {self.head_seq} hash {self.head_hash}; "
                f"last checkpoint at seq {self.signed_seq}{tail}"
            )
        return f"TAMPERED at seq {self.first_bad_seq}: {self.problem}"


class ChainChecker:
    """Walks records in seq order and names the first one that breaks the chain.

    Checks, per record: its seq follows the last one (no gap, no repeat), its ``prev_hash``
    names the record before it, and its stored ``hash`` is the hash of its content. A record
    whose ``prev_hash`` names the record two back is reported as an insertion of the one
    between. When two records that each hash correctly do not link, the earlier one is named:
    its hash is not the one its successor recorded (it was rewritten together with its hash,
    or records between them were removed).
    """

    __slots__ = ("_before", "head_hash", "head_seq")

    def __init__(
        self, head_seq: int = 0, head_hash: str = GENESIS_HASH, before: str | None = None
    ) -> None:
        self.head_seq = head_seq
        self.head_hash = head_hash
        self._before = before  # hash of the record before the head, when known

    @property
    def before(self) -> str | None:
        """The hash of the record before the head, when known."""
        return self._before

    def check(
        self, seq: int, prev_hash: str, stored_hash: str, computed_hash: str
    ) -> ChainProblem | None:
        """Check the next record; advance past it when it is sound, else say what is wrong."""
        expected = self.head_seq + 1
        if seq != expected:
            if seq < expected:
                return ChainProblem(seq, f"record {seq} appears again after record {self.head_seq}")
            missing = (
                f"record {expected} is"
                if seq == expected + 1
                else (f"records {expected}..{seq - 1} are")
            )
            return ChainProblem(expected, f"{missing} missing (removed): the next is {seq}")
        if prev_hash != self.head_hash:
            if self.head_seq >= 1 and prev_hash == self._before:
                return ChainProblem(
                    self.head_seq,
                    f"record {self.head_seq} was inserted: record {seq} names record "
                    f"{self.head_seq - 1} as its predecessor",
                )
            if computed_hash != stored_hash:
                return ChainProblem(
                    seq,
                    f"record {seq} was altered or moved here: its content does not match its "
                    f"hash, and its prev_hash does not name record {self.head_seq}",
                )
            if self.head_seq == 0:
                return ChainProblem(
                    seq,
                    f"record {seq} does not start the chain (its prev_hash is not the "
                    "genesis hash): records before it were removed",
                )
            return ChainProblem(
                self.head_seq,
                f"record {seq} does not link to record {self.head_seq}: record "
                f"{self.head_seq} was rewritten, or records between them were removed",
            )
        if computed_hash != stored_hash:
            return ChainProblem(
                seq, f"record {seq} was altered: its content does not match its hash"
            )
        self._before, self.head_hash, self.head_seq = self.head_hash, stored_hash, seq
        return None


class ChainFollower:
    """Checks a stream of ``lifecycle.AuditRecord`` values incrementally (``audit replay``).

    Records may arrive out of order within ``window`` seqs and may be delivered more than once:
    a repeat with the same seq and the same (correct) hash is counted and ignored, a repeat
    that differs is a problem. A seq still missing when records ``window`` past it have
    arrived (or at :meth:`finish`) is a gap. After the first problem the follower stops: it
    keeps that problem and checks nothing more.

    By default the stream must start at seq 1 (genesis). ``start_seq``/``start_hash`` resume
    after a known record (e.g. one a signed checkpoint vouches for); ``anchor_on_first`` trusts
    the first record received as the start (a ``--follow`` from the live end) and ignores any
    lower seq that comes later.

    Pure: no I/O, no clock.
    """

    def __init__(
        self,
        *,
        window: int = 10_000,
        start_seq: int = 0,
        start_hash: str = GENESIS_HASH,
        anchor_on_first: bool = False,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._window = window
        self._checker = ChainChecker(start_seq, start_hash)
        self._anchor = anchor_on_first
        self._pending: dict[int, tuple[Any, str, str, str]] = {}
        self._max_pending = 0
        self._recent: dict[int, str] = {}  # seq -> hash of verified records, ascending
        self.problem: ChainProblem | None = None
        self.verified = 0
        self.duplicates = 0

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def head_seq(self) -> int:
        """Seq of the last record verified (0: none yet)."""
        return self._checker.head_seq

    @property
    def head_hash(self) -> str:
        return self._checker.head_hash

    @property
    def pending(self) -> int:
        """Records received ahead of a gap, waiting for the missing ones."""
        return len(self._pending)

    def feed(self, record: Mapping[str, Any], item: Any = None) -> list[Any]:
        """Take one record (a decoded ``lifecycle.AuditRecord``); return what this made
        verified, in seq order: each record's ``item`` (by default the record itself)."""
        if self.problem is not None:
            return []
        try:
            row = audit_record_row(record)
        except ValueError as exc:
            seq = record.get("seq") if isinstance(record, Mapping) else None
            at = seq if isinstance(seq, int) else self.head_seq + 1
            self.problem = ChainProblem(at, f"record {at} cannot be read: {exc}")
            return []
        return self.feed_hashed(
            record if item is None else item,
            row["seq"],
            row["prev_hash"],
            row["hash"],
            row_hash(row),
        )

    def feed_hashed(
        self, item: Any, seq: int, prev_hash: str, stored_hash: str, computed_hash: str
    ) -> list[Any]:
        """:meth:`feed` for a record the caller has read and hashed: its ``seq``, ``prev_hash``
        and stored ``hash``, and ``computed_hash`` of its content in the canonical encoding
        (as :func:`audit_record_row` and :func:`row_hash` would give). Returns the ``item`` of
        each record this made verified, in seq order."""
        if self.problem is not None:
            return []
        if self._anchor:
            self._anchor = False
            self._checker = ChainChecker(seq - 1, prev_hash)
        checker = self._checker
        if seq == checker.head_seq + 1 and not self._pending:  # in order: the usual case
            problem = checker.check(seq, prev_hash, stored_hash, computed_hash)
            if problem is not None:
                self.problem = problem
                return []
            self._remember(seq, stored_hash)
            self.verified += 1
            return [item]
        if seq <= checker.head_seq or seq in self._pending:
            known = self._recent_hash(seq) if seq <= checker.head_seq else self._pending[seq][2]
            if known is None or (known == stored_hash and computed_hash == stored_hash):
                self.duplicates += 1  # a redelivery (or older than the window: not checkable)
                return []
            self.problem = ChainProblem(
                seq, f"record {seq} was delivered twice with different content"
            )
            return []
        self._pending[seq] = (item, prev_hash, stored_hash, computed_hash)
        self._max_pending = max(self._max_pending, seq)
        verified: list[Any] = []
        while checker.head_seq + 1 in self._pending:
            next_seq = checker.head_seq + 1
            next_item, next_prev, next_stored, next_computed = self._pending.pop(next_seq)
            problem = checker.check(next_seq, next_prev, next_stored, next_computed)
            if problem is not None:
                self.problem = problem
                return verified
            self._remember(next_seq, next_stored)
            self.verified += 1
            verified.append(next_item)
        if self._pending and self._max_pending - checker.head_seq > self._window:
            self.problem = self._gap()
        return verified

    def finish(self) -> VerifyReport:
        """End of the stream: the report (a seq still missing is a gap)."""
        if self.problem is None and self._pending:
            self.problem = self._gap()
        return VerifyReport(
            ok=self.problem is None,
            records=self.verified,
            checkpoints=0,
            first_bad_seq=None if self.problem is None else self.problem.seq,
            problem=None if self.problem is None else self.problem.message,
            head_seq=self.head_seq,
            head_hash=self.head_hash,
        )

    def _gap(self) -> ChainProblem:
        missing = self.head_seq + 1
        after = min(self._pending)
        return ChainProblem(
            missing, f"record {missing} is missing: the stream went on to {after} and beyond"
        )

    def _remember(self, seq: int, hash_: str) -> None:
        """Keep the hash of a verified record (seqs arrive here one by one, ascending)."""
        recent = self._recent
        recent[seq] = hash_
        if len(recent) > 2 * self._window:  # forget all but the window, now and then
            self._recent = dict(itertools.islice(recent.items(), len(recent) - self._window, None))

    def _recent_hash(self, seq: int) -> str | None:
        """The hash of verified record ``seq`` if it is one of the last ``window`` verified."""
        return self._recent.get(seq) if self.head_seq - seq < self._window else None
