"""The workers' source check, on in-memory registry snapshots (pure logic; the running
pipeline is tested in tests/integration/test_authenticated_sources.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.clock import FixedClock
from processors.authentication import PERMIT, SourceCheck, authorize
from processors.reasons import REASON_CODES, SOURCE_NOT_AUTHORIZED, SOURCE_UNAUTHENTICATED
from streams.codec import SingleObjectCodec
from streams.sourceauth import SourceCredential, new_secret, seal
from streams.sources import CONSENT_WITHDRAWAL, ERASURE, RegisteredSource, SecretVersion

from tests_support import customer_event

CODEC = SingleObjectCodec()
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
BILLING_V1 = SourceCredential("billing", 1, new_secret())
BILLING_V2 = SourceCredential("billing", 2, new_secret())
CRM = SourceCredential("crm", 1, new_secret())


def source(
    credential: SourceCredential,
    roles: set[str] | None,
    kinds: set[str] = frozenset(),  # type: ignore[assignment]
    versions: tuple[SecretVersion, ...] | None = None,
) -> RegisteredSource:
    versions = versions or (SecretVersion(credential.version, T0, None, credential.secret),)
    return RegisteredSource(
        credential.name,
        None if roles is None else frozenset(roles),
        frozenset(kinds),
        T0,
        T0,
        None,
        versions,
    )


REGISTRY = {
    "billing": source(BILLING_V1, {"billing_clerk"}),
    "crm": source(CRM, {"customer_service", "privacy_officer"}, {ERASURE}),
}


def signed(
    credential: SourceCredential | None, kind: str = "used", **overrides: Any
) -> tuple[dict[str, Any], bytes]:
    record = customer_event(kind, **overrides)
    value = CODEC.encode("lifecycle.CustomerEvent", record)
    if credential is not None:
        value = seal(value, credential)
    return CODEC.decode("lifecycle.CustomerEvent", value), value


def check(registry: dict[str, RegisteredSource] = REGISTRY, **options: Any) -> SourceCheck:
    return SourceCheck(lambda: registry, clock=options.pop("clock", lambda: T0), **options)


def test_the_new_reason_codes_are_policy_reason_codes() -> None:
    assert {SOURCE_UNAUTHENTICATED, SOURCE_NOT_AUTHORIZED} <= REASON_CODES


def test_an_event_signed_by_its_registered_source_with_an_allowed_role_passes() -> None:
    event, value = signed(BILLING_V1, source="billing")
    assert check().check_event(event, value) is None


@pytest.mark.parametrize(
    ("credential", "overrides", "why"),
    [
        (None, {}, "carries no source MAC"),
        (SourceCredential("meter", 1, new_secret()), {"source": "meter"}, "not a registered"),
        (SourceCredential("billing", 1, new_secret()), {"source": "billing"}, "does not match"),
        (
            SourceCredential("billing", 7, new_secret()),
            {"source": "billing"},
            "no secret version 7",
        ),
        (BILLING_V1, {"source": "crm"}, "names source 'crm' but its MAC is 'billing'"),
    ],
)
def test_an_event_no_registered_source_vouches_for_is_unauthenticated(
    credential: SourceCredential | None, overrides: dict[str, Any], why: str
) -> None:
    event, value = signed(credential, **overrides)
    refusal = check().check_event(event, value)
    assert refusal is not None and refusal.reason_code == SOURCE_UNAUTHENTICATED
    assert why in refusal.why
    assert "PROTECTION OF CUSTOMER'S PERSONAL INFORMATION" in refusal.rule


def test_a_record_changed_after_signing_is_unauthenticated() -> None:
    event, _ = signed(CRM, source="crm")
    relabelled = {
        **event,
        "kind": "deletion_requested",
        "body": {"request_id": "F", "categories": None},
        "actor": {"id": "x", "role": "privacy_officer"},
    }
    value = CODEC.encode("lifecycle.CustomerEvent", relabelled)
    refusal = check().check_event(CODEC.decode("lifecycle.CustomerEvent", value), value)
    assert refusal is not None and refusal.reason_code == SOURCE_UNAUTHENTICATED


def test_a_role_or_a_destructive_kind_the_source_is_not_registered_for_is_not_authorized() -> None:
    cases = [
        ({"actor": {"id": "a", "role": "privacy_officer"}}, "used", "act as 'privacy_officer'"),
        ({"actor": {"id": "a", "role": "billing_clerk"}}, "deletion_requested", "file erasure"),
        ({"actor": {"id": "a", "role": "billing_clerk"}}, "consent_changed", "consent_withdrawal"),
    ]
    for overrides, kind, why in cases:
        event, value = signed(BILLING_V1, kind, source="billing", **overrides)
        refusal = check().check_event(event, value)
        assert refusal is not None and refusal.reason_code == SOURCE_NOT_AUTHORIZED, kind
        assert why in refusal.why
    erasure, value = signed(
        CRM, "deletion_requested", source="crm", actor={"id": "po", "role": "privacy_officer"}
    )
    assert check().check_event(erasure, value) is None
    granted, value = signed(
        BILLING_V1,
        "consent_changed",
        source="billing",
        body={"purpose": "personalization", "granted": True},
    )
    assert check().check_event(granted, value) is None  # re-granting consent is not destructive


def test_a_retired_secret_is_accepted_until_its_grace_ends_then_refused() -> None:
    ends = T0 + timedelta(hours=1)
    rotated = {
        "billing": source(
            BILLING_V2,
            {"billing_clerk"},
            versions=(
                SecretVersion(1, T0, ends, BILLING_V1.secret),
                SecretVersion(2, T0, None, BILLING_V2.secret),
            ),
        )
    }
    clock = FixedClock(T0 + timedelta(minutes=59))
    checker = check(rotated, clock=clock)
    old, old_value = signed(BILLING_V1, source="billing")
    new, new_value = signed(BILLING_V2, source="billing")
    assert checker.check_event(old, old_value) is None
    clock.set(ends)
    refusal = checker.check_event(old, old_value)
    assert refusal is not None and "secret version 1 of source billing was retired" in refusal.why
    assert checker.check_event(new, new_value) is None


def test_permit_lets_only_unsigned_events_through_and_counts_them() -> None:
    permitted: list[str] = []
    checker = check(mode=PERMIT, on_permitted=permitted.append)
    unsigned, value = signed(None, "collected")
    assert checker.check_event(unsigned, value) is None
    assert permitted == ["collected"]
    wrong, value = signed(SourceCredential("billing", 1, new_secret()), source="billing")
    refusal = checker.check_event(wrong, value)
    assert refusal is not None and refusal.reason_code == SOURCE_UNAUTHENTICATED
    assert permitted == ["collected"]


def test_the_registry_is_read_again_after_its_ttl_and_once_a_batch_for_an_unknown_name() -> None:
    reads: list[int] = []
    current: dict[str, RegisteredSource] = {}
    now = [0.0]

    def load() -> dict[str, RegisteredSource]:
        reads.append(1)
        return dict(current)

    checker = SourceCheck(load, clock=lambda: T0, ttl=5.0, monotonic=lambda: now[0])
    event, value = signed(CRM, source="crm", actor={"id": "a", "role": "customer_service"})
    checker.new_batch()
    assert checker.check_event(event, value) is not None  # first read; crm unknown
    assert len(reads) == 1  # already read in this batch: no second read
    current["crm"] = REGISTRY["crm"]
    assert checker.check_event(event, value) is not None and len(reads) == 1
    checker.new_batch()
    assert checker.check_event(event, value) is None and len(reads) == 2
    del current["crm"]
    now[0] = 4.0
    assert checker.check_event(event, value) is None  # within the TTL: the snapshot holds
    now[0] = 5.5
    assert checker.check_event(event, value) is not None and len(reads) == 3


def test_sweeps_need_a_source_registered_for_them() -> None:
    cli = SourceCredential("cli", 1, new_secret())
    registry = {
        **REGISTRY,
        "cli": source(cli, {"privacy_officer"}, {ERASURE, CONSENT_WITHDRAWAL, "retention_sweep"}),
    }
    request = {"sweep_id": "s-1", "as_of": T0, "requested_by": "po", "auth": None}
    for credential, expected in ((cli, None), (CRM, SOURCE_NOT_AUTHORIZED), (None, "unsigned")):
        value = CODEC.encode("lifecycle.RetentionSweep", request)
        if credential is not None:
            value = seal(value, credential)
        decoded = CODEC.decode("lifecycle.RetentionSweep", value)
        refusal = check(registry).check_sweep(decoded, value)
        if expected is None:
            assert refusal is None
        elif expected == "unsigned":
            assert refusal is not None and refusal.reason_code == SOURCE_UNAUTHENTICATED
        else:
            assert refusal is not None and refusal.reason_code == expected


def test_authorize_answers_for_requests_authenticated_otherwise() -> None:
    assert authorize(REGISTRY["crm"], "crm", "privacy_officer", ERASURE) is None
    refusal = authorize(REGISTRY["crm"], "crm", None, "redrive")
    assert refusal is not None and refusal.reason_code == SOURCE_NOT_AUTHORIZED
    refusal = authorize(None, "nobody", None, "redrive")
    assert refusal is not None and refusal.reason_code == SOURCE_UNAUTHENTICATED
    assert check().authorize("crm", "customer_service", None) is None


def test_a_refusal_never_repeats_a_value_that_is_not_a_name() -> None:
    stranger = SourceCredential("meter", 1, new_secret())
    event, value = signed(stranger, source="meter")
    forged = {**event, "auth": {**event["auth"], "source": "Odette Example"}}
    refusal = check().check_event(forged, value)
    assert refusal is not None and "Odette" not in refusal.rule
    event, value = signed(BILLING_V1, source="billing", actor={"id": "a", "role": "Odette E."})
    refusal = check().check_event(event, value)
    assert refusal is not None and refusal.reason_code == SOURCE_NOT_AUTHORIZED
    assert "Odette" not in refusal.rule
