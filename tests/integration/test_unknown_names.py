"""Names the policy does not know, from a producer that is not our publisher.

``lifecycle publish`` refuses a category or purpose the policy does not know, but another
upstream system may write to ``customer.events`` with its own (out-of-date, or wrong) list of
names. Those events are produced here by the project's :class:`Publisher` given a vocabulary
widened with the unknown names: encrypted and Avro-encoded exactly as on the bus, only the
name check skipped. Each must get exactly one ``deny`` with the reason code the README ("The
policy file") documents, appear on ``privacy.violations``, and leave the worker deciding the
valid events that follow.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from core.settings import load_settings
from lifecycle.runtime import Runtime
from processors.explain import check_event
from processors.policy import Vocabulary
from streams.codec import SingleObjectCodec
from streams.publisher import Publisher
from streams.topics import VIOLATIONS

from fixtures.broker import Workers, audit_records, read_topic, run_cli
from integration.scenario import PERSONAL, event, lines

CODEC = SingleObjectCodec()
SUBJECT = "C-80001"

UNKNOWN_CATEGORY = "shoe_size"
UNKNOWN_PURPOSE = "debt_resale"
UNKNOWN_ROLE = "meter_reader"
UNKNOWN_RECIPIENT = "acme_data_brokers"


def subject_event(kind: str, event_id: str, minute: int, role: str, **fields: Any) -> dict:
    return event(kind, event_id, minute, role, subject=SUBJECT, **fields)


BEFORE = [
    subject_event(
        "collected",
        "n01",
        0,
        "system",
        channel="web_form",
        purposes=["billing", "legal_compliance"],
        data={k: PERSONAL[k] for k in ("name", "email")},
    ),
]

# event -> the decision the policy gives it (README, "The policy file": unknown names)
UNKNOWN: list[tuple[dict[str, Any], str]] = [
    (
        subject_event("used", "n02", 1, UNKNOWN_ROLE, categories=["email"], purpose="billing"),
        "role_not_authorized",
    ),
    (
        subject_event(
            "used", "n03", 2, "billing_clerk", categories=["email"], purpose=UNKNOWN_PURPOSE
        ),
        "purpose_not_permitted",
    ),
    (
        subject_event(
            "used", "n04", 3, "billing_clerk", categories=[UNKNOWN_CATEGORY], purpose="billing"
        ),
        "role_not_authorized",
    ),
    (
        subject_event(
            "collected",
            "n05",
            4,
            "system",
            channel="web_form",
            purposes=["billing"],
            data={UNKNOWN_CATEGORY: "44"},
        ),
        "prohibited_collection",
    ),
    (
        subject_event(
            "collected",
            "n06",
            5,
            "system",
            channel="web_form",
            purposes=[UNKNOWN_PURPOSE],
            data={"email": PERSONAL["email"]},
        ),
        "purpose_not_permitted",
    ),
    (
        subject_event(
            "shared",
            "n07",
            6,
            "customer_service",
            categories=["name"],
            recipient=UNKNOWN_RECIPIENT,
            purpose="legal_compliance",
        ),
        "recipient_not_trusted",
    ),
    (
        subject_event(
            "consent_changed", "n08", 7, "system", purpose=UNKNOWN_PURPOSE, granted=False
        ),
        "purpose_not_permitted",
    ),
    (
        subject_event(
            "deletion_requested",
            "n09",
            8,
            "privacy_officer",
            request_id="REQ-N09",
            categories=[UNKNOWN_CATEGORY],
        ),
        "not_collected",
    ),
    (
        subject_event(
            "consent_changed", "n12", 8, UNKNOWN_ROLE, purpose="personalization", granted=False
        ),
        "role_not_authorized",
    ),
    (  # nothing is erased: the uses after it are still allowed
        subject_event("deletion_requested", "n13", 8, UNKNOWN_ROLE, request_id="REQ-N13"),
        "role_not_authorized",
    ),
]

LEFT_TO_THE_WORKER = ("n02", "n07", "n12", "n13")
"""Events whose only unknown name is a role or recipient: the publisher passes them."""

AFTER = [
    subject_event("used", "n10", 9, "billing_clerk", categories=["email"], purpose="billing"),
    subject_event(
        "shared",
        "n11",
        10,
        "customer_service",
        categories=["name"],
        recipient="authorities",
        purpose="legal_compliance",
    ),
]


def widened(vocabulary: Vocabulary) -> Vocabulary:
    """What another producer believes the names are: the policy's plus the unknown ones."""
    return replace(
        vocabulary,
        categories=vocabulary.categories | {UNKNOWN_CATEGORY},
        purposes=vocabulary.purposes | {UNKNOWN_PURPOSE},
    )


def test_events_naming_what_the_policy_does_not_know_are_denied_once_with_the_reason_code(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(BEFORE)).returncode == 0

    # our publisher refuses every line naming a category or purpose the policy does not know
    # (roles and recipients it leaves to the worker), so another producer is needed to send them
    names_unknown = [e for e, _ in UNKNOWN if e["event_id"] not in LEFT_TO_THE_WORKER]
    refused = run_cli(lifecycle_env, "publish", "-", stdin=lines(names_unknown))
    assert refused.returncode == 1
    assert f"published 0, refused {len(names_unknown)}" in refused.stderr.decode()

    runtime = Runtime(load_settings(lifecycle_env)).open()
    other_producer = Publisher(
        runtime.settings.kafka_client_config(),
        runtime.keystore,
        runtime.codec,
        widened(runtime.policy.vocabulary()),
    )
    try:
        for record, _ in UNKNOWN:
            other_producer.publish(record)
    finally:
        other_producer.close()

    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(AFTER)).returncode == 0

    total = len(BEFORE) + len(UNKNOWN) + len(AFTER)
    ledger = audit_records(broker, CODEC, total)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in ledger:
        by_event.setdefault(record["decision"]["event_id"], []).append(record["decision"])

    expected = {e["event_id"]: ("deny", reason) for e, reason in UNKNOWN}
    expected.update({e["event_id"]: ("allow", "allowed") for e in BEFORE + AFTER})
    assert {e: [(d["decision"], d["reason_code"]) for d in ds] for e, ds in by_event.items()} == {
        e: [outcome] for e, outcome in expected.items()
    }
    assert "is not a trusted recipient" in by_event["n07"][0]["rule"]
    assert f"{UNKNOWN_ROLE!r} is not a role" in by_event["n02"][0]["rule"]

    violations = read_topic(broker, VIOLATIONS, min_count=len(UNKNOWN))
    on_violations = [CODEC.decode("lifecycle.Decision", m.value()) for m in violations]
    assert sorted((d["event_id"], d["reason_code"]) for d in on_violations) == sorted(
        (e["event_id"], reason) for e, reason in UNKNOWN
    )

    # `lifecycle policy check` gives the worker's decision, beside the publisher's refusal
    history = [json.dumps(e) for e in BEFORE]
    for record, reason in UNKNOWN:
        checked = check_event(json.dumps(record), runtime.policy, state_lines=history)
        assert (checked.verdict.decision, checked.verdict.reason_code) == ("deny", reason)
        assert checked.verdict.rule == by_event[record["event_id"]][0]["rule"]
        refusable = record["event_id"] not in LEFT_TO_THE_WORKER
        assert (checked.publisher_refusal is not None) == refusable
