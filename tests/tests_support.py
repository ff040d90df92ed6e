"""Builders for records used across tests (no personal data: invented values only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def customer_event(kind: str = "used", **overrides: Any) -> dict[str, Any]:
    bodies: dict[str, dict[str, Any]] = {
        "collected": {
            "channel": "web_form",
            "purposes": ["billing"],
            "data": [
                {"category": "email", "key_version": 1, "nonce": b"n" * 12, "ciphertext": b"c" * 30}
            ],
        },
        "used": {"categories": ["email"], "purpose": "billing"},
        "shared": {
            "categories": ["name"],
            "recipient": "authorities",
            "purpose": "legal_compliance",
        },
        "deletion_requested": {"request_id": "REQ-1", "categories": None},
        "consent_changed": {"purpose": "personalization", "granted": False},
    }
    record = {
        "event_id": "ev-1",
        "kind": kind,
        "occurred_at": datetime(2026, 2, 2, 9, 0, tzinfo=UTC),
        "published_at": datetime(2026, 2, 2, 9, 0, 1, tzinfo=UTC),
        "source": "billing",
        "subject_ref": "ab" * 32,
        "subject": {
            "category": "subject_id",
            "key_version": 1,
            "nonce": b"n" * 12,
            "ciphertext": b"s" * 24,
        },
        "actor": {"id": "clerk-1", "role": "billing_clerk"},
        "body": bodies[kind],
        "auth": None,
    }
    record.update(overrides)
    return record
