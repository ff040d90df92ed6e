"""Ledger records that no customer event caused: a retention sweep's shredding, a dead letter
sent back. They are ``lifecycle.Decision`` values like any other, taken by the system, with no
purpose, recipient or consent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any


def system_decision(
    *,
    event_id: str,
    kind: str,
    subject_ref: str,
    source: str,
    reason_code: str,
    rule: str,
    policy_version: str,
    occurred_at: datetime,
    decided_at: datetime,
    categories: Iterable[str] = (),
    source_partition: int = -1,
    source_offset: int = -1,
    erasure: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The decision value of a record the system itself made (``actor_role`` ``system``,
    allowed). ``source_partition``/``source_offset`` -1: it was read from no topic."""
    return {
        "event_id": event_id,
        "kind": kind,
        "subject_ref": subject_ref,
        "source": source,
        "categories": list(categories),
        "purpose": None,
        "purposes": [],
        "consent_granted": None,
        "recipient": None,
        "actor_role": "system",
        "decision": "allow",
        "reason_code": reason_code,
        "rule": rule,
        "policy_version": policy_version,
        "occurred_at": occurred_at,
        "decided_at": decided_at,
        "source_partition": source_partition,
        "source_offset": source_offset,
        "erasure": None if erasure is None else dict(erasure),
    }
