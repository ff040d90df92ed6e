"""One stored ledger record, read-only, in each form it is used in: as stored, as the decision it
records, as the ``lifecycle.AuditRecord`` published on ``privacy.audit``, and as exported."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from sinks.stored import DECISION_FIELDS, parse_utc_text


class AuditEntry:
    """One stored ledger record (read-only); what ``append`` returns and ``iter_records`` yields."""

    __slots__ = ("_row",)

    def __init__(self, row: dict[str, Any]) -> None:
        self._row = row  # the stored form; the entry owns it from here on

    @property
    def seq(self) -> int:
        return int(self._row["seq"])

    @property
    def prev_hash(self) -> str:
        return str(self._row["prev_hash"])

    @property
    def hash(self) -> str:
        return str(self._row["hash"])

    @property
    def event_id(self) -> str:
        return str(self._row["event_id"])

    @property
    def subject_ref(self) -> str:
        return str(self._row["subject_ref"])

    @property
    def recorded_at(self) -> datetime:
        return parse_utc_text(self._row["recorded_at"])

    def stored(self) -> dict[str, Any]:
        """The record exactly as stored (column name -> value)."""
        return dict(self._row)

    def decision(self) -> dict[str, Any]:
        """The ``lifecycle.Decision`` value it records (timestamps as aware datetimes)."""
        row = self._row
        out = {name: row[name] for name in DECISION_FIELDS}
        out["categories"] = orjson.loads(row["categories"])
        out["purposes"] = orjson.loads(row["purposes"])
        out["erasure"] = None if row["erasure"] is None else orjson.loads(row["erasure"])
        out["occurred_at"] = parse_utc_text(row["occurred_at"])
        out["decided_at"] = parse_utc_text(row["decided_at"])
        return out

    def as_audit_record(self) -> dict[str, Any]:
        """The ``lifecycle.AuditRecord`` value to publish on ``privacy.audit``."""
        return {
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "recorded_at": self.recorded_at,
            "decision": self.decision(),
        }

    def as_export(self) -> dict[str, Any]:
        """A flat JSON-ready object: the canonical fields (timestamps as text) plus ``hash``."""
        row = self._row
        return {
            "seq": row["seq"],
            "event_id": row["event_id"],
            "kind": row["kind"],
            "subject_ref": row["subject_ref"],
            "decision": row["decision"],
            "reason_code": row["reason_code"],
            "policy_version": row["policy_version"],
            "occurred_at": row["occurred_at"],
            "decided_at": row["decided_at"],
            "recorded_at": row["recorded_at"],
            "source": row["source"],
            "actor_role": row["actor_role"],
            "purpose": row["purpose"],
            "purposes": orjson.loads(row["purposes"]),
            "consent_granted": row["consent_granted"],
            "recipient": row["recipient"],
            "categories": orjson.loads(row["categories"]),
            "rule": row["rule"],
            "erasure": None if row["erasure"] is None else orjson.loads(row["erasure"]),
            "source_partition": row["source_partition"],
            "source_offset": row["source_offset"],
            "prev_hash": row["prev_hash"],
            "hash": row["hash"],
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuditEntry) and self._row == other._row

    def __hash__(self) -> int:
        return hash((self._row["seq"], self._row["hash"]))

    def __repr__(self) -> str:
        return f"AuditEntry(seq={self.seq}, event_id={self.event_id!r}, hash={self.hash[:12]}...)"
