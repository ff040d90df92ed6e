"""One customer's story, exercising every decision the policy makes, with the expected result
of each event (checked against the pure engine in tests/processors and against the running
pipeline in tests/integration)."""

from __future__ import annotations

import json
from typing import Any

CARD_NUMBER = "4000 0000 0000 0002"
PERSONAL = {
    "name": "Odette Example-Persad",
    "email": "odette.example@example.org",
    "address": "12 Sample Street, Arima",
    "banking": "ACCT-5550-1234-EXAMPLE",
    "credit_card": "5500 0000 0000 0004",
    "web_log": "203.0.113.7 Firefox/128 /outages 2026-03-01T09:00",
}


def event(
    kind: str,
    event_id: str,
    minute: int,
    role: str = "customer_service",
    subject: str = "C-70001",
    day: str = "2026-03-01",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "event_id": event_id,
        "occurred_at": f"{day}T09:{minute:02d}:00+00:00",
        "source": "crm",
        "subject_id": subject,
        "actor": {"id": "staff-1", "role": role},
        **fields,
    }


SCENARIO: list[tuple[dict[str, Any], tuple[str, str]]] = [
    (
        event(
            "collected",
            "s01",
            0,
            "system",
            channel="web_form",
            purposes=[
                "billing",
                "account_notices",
                "service_information",
                "transaction_processing",
            ],
            data={k: PERSONAL[k] for k in ("name", "email", "address", "banking", "credit_card")},
        ),
        ("allow", "allowed"),
    ),
    (
        event("used", "s02", 1, "billing_clerk", categories=["banking"], purpose="billing"),
        ("allow", "allowed"),
    ),
    (
        event("used", "s03", 2, "marketing", categories=["email"], purpose="sale"),
        ("deny", "purpose_not_permitted"),
    ),
    (
        event("used", "s04", 3, categories=["email"], purpose="personalization"),
        ("deny", "purpose_not_declared"),
    ),
    (
        event("used", "s05", 4, "web_admin", categories=["banking"], purpose="billing"),
        ("deny", "role_not_authorized"),
    ),
    (
        event("consent_changed", "s06", 5, "system", purpose="service_information", granted=False),
        ("allow", "allowed"),
    ),
    (
        event("used", "s07", 6, categories=["email"], purpose="service_information"),
        ("deny", "consent_withdrawn"),
    ),
    (
        event("consent_changed", "s08", 7, "system", purpose="service_information", granted=True),
        ("allow", "allowed"),
    ),
    (
        event("used", "s09", 8, categories=["email"], purpose="service_information"),
        ("allow", "allowed"),
    ),
    (
        event(
            "shared",
            "s10",
            9,
            "billing_clerk",
            categories=["name"],
            recipient="unknown_partner",
            purpose="billing",
        ),
        ("deny", "recipient_not_trusted"),
    ),
    (
        event(
            "shared",
            "s11",
            10,
            "billing_clerk",
            categories=["credit_card", "name"],
            recipient="first_atlantic_commerce",
            purpose="transaction_processing",
        ),
        ("allow", "allowed"),
    ),
    (
        event(
            "shared",
            "s12",
            11,
            "billing_clerk",
            categories=["banking"],
            recipient="first_atlantic_commerce",
            purpose="transaction_processing",
        ),
        ("deny", "recipient_not_trusted"),
    ),
    (
        event(
            "collected",
            "s13",
            12,
            "system",
            channel="online_tendering",
            purposes=["transaction_processing"],
            data={"credit_card": CARD_NUMBER},
        ),
        ("deny", "prohibited_collection"),
    ),
    (
        event("used", "s14", 13, categories=["telephone"], purpose="customer_support"),
        ("deny", "not_collected"),
    ),
    (
        event(
            "deletion_requested",
            "s15",
            14,
            "privacy_officer",
            request_id="REQ-S15",
            categories=["email"],
        ),
        ("allow", "allowed"),
    ),
    (
        event("used", "s16", 15, categories=["email"], purpose="account_notices"),
        ("deny", "subject_erased"),
    ),
    # statement_print_house became a trusted recipient in policy 2026-01-01 only
    (
        event(
            "shared",
            "s17",
            16,
            "billing_clerk",
            categories=["name"],
            recipient="statement_print_house",
            purpose="billing",
        ),
        ("allow", "allowed"),
    ),
    (
        event(
            "shared",
            "s18",
            17,
            "billing_clerk",
            categories=["name"],
            recipient="statement_print_house",
            purpose="billing",
            day="2025-03-01",
        ),
        ("deny", "recipient_not_trusted"),
    ),
]

EXPECTED = {e["event_id"]: outcome for e, outcome in SCENARIO}
EXPECTED_VERSION = {"s18": "2018-08-01"}


def lines(events: list[dict[str, Any]] | None = None) -> bytes:
    chosen = [e for e, _ in SCENARIO] if events is None else events
    return "".join(json.dumps(e) + "\n" for e in chosen).encode()
