"""The decision engine: one verdict per event, in the documented check order; state, erasure,
retention. Pure logic on the repo's policy files, no broker."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.erasure import (
    apply_erasure,
    end_versions,
    erasure_versions,
    expired,
    mark_erased,
    plan_erasure,
    rekeyed,
)
from processors.exceptions import EventError, StateError
from processors.policy import load_policies
from processors.reasons import REASON_CODES, RETENTION_EXPIRED, SUBJECT_ERASED, VALUE_UNREADABLE
from processors.rules import RefusalScreen, Verdict, apply, decide, refuse_unreadable
from processors.state import Collection, KeyVersions, SubjectState
from streams.events import validate

REPO_POLICY = Path(__file__).resolve().parents[2] / "policy"
BOOK = load_policies(REPO_POLICY)

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
LATER = datetime(2026, 2, 2, 10, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- event builders


def event(kind: str, body: dict[str, Any], role: str, at: datetime) -> dict[str, Any]:
    """A decoded lifecycle.CustomerEvent, as fastavro returns it."""
    return {
        "event_id": f"{kind}-{at.isoformat()}",
        "kind": kind,
        "occurred_at": at,
        "published_at": at,
        "source": "test",
        "subject_ref": "ref-1",
        "subject": {"category": "subject_id", "key_version": 1, "nonce": b"", "ciphertext": b""},
        "actor": {"id": "actor-1", "role": role},
        "body": body,
    }


def collected(
    categories: Sequence[str],
    purposes: Sequence[str],
    *,
    channel: str = "web_form",
    role: str = "system",
    at: datetime = T0,
    key_version: int = 1,
) -> dict[str, Any]:
    data = [
        {"category": c, "key_version": key_version, "nonce": b"n", "ciphertext": b"c"}
        for c in categories
    ]
    return event(
        "collected", {"channel": channel, "purposes": list(purposes), "data": data}, role, at
    )


def used(
    categories: Sequence[str], purpose: str, role: str, at: datetime = LATER
) -> dict[str, Any]:
    return event("used", {"categories": list(categories), "purpose": purpose}, role, at)


def shared(
    categories: Sequence[str], recipient: str, purpose: str, role: str, at: datetime = LATER
) -> dict[str, Any]:
    body = {"categories": list(categories), "recipient": recipient, "purpose": purpose}
    return event("shared", body, role, at)


def consent(purpose: str, granted: bool, at: datetime = LATER) -> dict[str, Any]:
    return event("consent_changed", {"purpose": purpose, "granted": granted}, "system", at)


def deletion(categories: Sequence[str] | None, at: datetime = LATER) -> dict[str, Any]:
    body = {"request_id": "REQ-1", "categories": None if categories is None else list(categories)}
    return event("deletion_requested", body, "privacy_officer", at)


def run(events: Iterable[dict[str, Any]], state: SubjectState | None = None) -> SubjectState:
    """Fold events into state the way the worker does (erasure included)."""
    state = state or SubjectState()
    for item in events:
        verdict = decide(item, state, BOOK)
        state = apply(item, verdict, state)
        if item["kind"] == "deletion_requested" and verdict.allowed:
            at = item["occurred_at"]
            plan = plan_erasure(state, item["body"]["categories"], BOOK.in_force(at), at)
            state = apply_erasure(state, plan, at)
    return state


def verdict_of(item: dict[str, Any], state: SubjectState) -> Verdict:
    result = decide(item, state, BOOK)
    assert result.reason_code in REASON_CODES
    assert result.decision == ("allow" if result.reason_code == "allowed" else "deny")
    return result


@pytest.fixture
def customer() -> SubjectState:
    """A customer who signed up on the web form for billing and account notices."""
    return run([collected(["name", "email", "address", "banking"], ["billing", "account_notices"])])


# --------------------------------------------------------------------------- allowed


def test_collection_for_declared_purposes_is_allowed_and_recorded(customer: SubjectState) -> None:
    verdict = verdict_of(collected(["name", "email"], ["billing"]), SubjectState())
    assert (verdict.decision, verdict.reason_code) == ("allow", "allowed")
    assert verdict.categories == ("name", "email")
    assert verdict.rule.startswith("channels.web_form [INFORMATION COLLECTED]:")
    assert customer.collected["banking"] == Collection(
        ("billing", "account_notices"), 1, T0.isoformat(), "2026-01-01"
    )


def test_use_for_the_declared_purpose_is_allowed(customer: SubjectState) -> None:
    verdict = verdict_of(used(["banking"], "billing", "billing_clerk"), customer)
    assert verdict.reason_code == "allowed"
    assert verdict.rule.startswith("purposes.billing [INFORMATION USE]: billing_clerk may use")
    assert verdict.policy_version == "2026-01-01"


def test_use_for_a_compatible_purpose_is_allowed_and_says_so(customer: SubjectState) -> None:
    state = run([collected(["telephone"], ["billing"])], customer)
    verdict = verdict_of(used(["telephone"], "account_notices", "customer_service"), state)
    assert verdict.reason_code == "allowed"
    assert "telephone via billing" in verdict.rule


def test_legal_compliance_may_use_data_collected_for_any_purpose(customer: SubjectState) -> None:
    verdict = verdict_of(
        shared(["name", "banking"], "authorities", "legal_compliance", "privacy_officer"), customer
    )
    assert verdict.reason_code == "allowed"
    assert "authorities" in verdict.rule


# --------------------------------------------------------------------------- purpose_not_permitted


def test_sale_is_refused_for_everyone(customer: SubjectState) -> None:
    verdict = verdict_of(used(["email"], "sale", "privacy_officer"), customer)
    assert (verdict.decision, verdict.reason_code) == ("deny", "purpose_not_permitted")
    assert verdict.rule.startswith(
        "prohibited_purposes.sale [DISCLOSURE OF INFORMATION TO OUTSIDE PARTIES]:"
    )


def test_sharing_for_trade_is_refused_even_with_a_trusted_recipient(
    customer: SubjectState,
) -> None:
    verdict = verdict_of(
        shared(["name"], "first_atlantic_commerce", "trade", "billing_clerk"), customer
    )
    assert verdict.reason_code == "purpose_not_permitted"


def test_unknown_purpose_is_not_permitted(customer: SubjectState) -> None:
    verdict = verdict_of(used(["email"], "profiling", "marketing"), customer)
    assert verdict.reason_code == "purpose_not_permitted"
    assert "'profiling' is not a purpose of policy 2026-01-01" in verdict.rule


def test_purpose_that_may_not_use_the_category_is_not_permitted(customer: SubjectState) -> None:
    verdict = verdict_of(used(["banking"], "contests_promotions_surveys", "system"), customer)
    assert verdict.reason_code == "purpose_not_permitted"
    assert "contests_promotions_surveys may not use banking" in verdict.rule


def test_collection_for_a_prohibited_purpose_is_not_permitted() -> None:
    verdict = verdict_of(collected(["email"], ["billing", "data_brokerage"]), SubjectState())
    assert verdict.reason_code == "purpose_not_permitted"


def test_collection_of_a_category_no_declared_purpose_may_use_is_not_permitted() -> None:
    verdict = verdict_of(collected(["date_of_birth"], ["billing"]), SubjectState())
    assert verdict.reason_code == "purpose_not_permitted"
    assert "may use date_of_birth" in verdict.rule


# --------------------------------------------------------------------------- role_not_authorized


def test_marketing_may_not_touch_banking(customer: SubjectState) -> None:
    verdict = verdict_of(used(["banking"], "billing", "marketing"), customer)
    assert verdict.reason_code == "role_not_authorized"
    assert verdict.rule.startswith(
        "roles.marketing.categories [PROTECTION OF CUSTOMER'S PERSONAL INFORMATION]:"
    )


def test_unknown_role_is_not_authorized(customer: SubjectState) -> None:
    verdict = verdict_of(used(["email"], "billing", "intern"), customer)
    assert verdict.reason_code == "role_not_authorized"
    assert "'intern' is not a role" in verdict.rule


def test_a_category_the_policy_does_not_know_is_touched_by_no_role(
    customer: SubjectState,
) -> None:
    verdict = verdict_of(used(["shoe_size"], "billing", "privacy_officer"), customer)
    assert verdict.reason_code == "role_not_authorized"
    assert "'shoe_size' is not a data category" in verdict.rule


def test_field_technician_may_not_collect_date_of_birth() -> None:
    verdict = verdict_of(
        collected(["date_of_birth"], ["service_provision"], role="field_technician"),
        SubjectState(),
    )
    assert verdict.reason_code == "role_not_authorized"


# --------------------------------------------------------------------------- recipients


def test_first_atlantic_commerce_inside_its_agreement_is_allowed() -> None:
    state = run([collected(["credit_card", "name"], ["billing"], channel="telephone")])
    verdict = verdict_of(
        shared(
            ["credit_card", "name"], "first_atlantic_commerce", "transaction_processing", "system"
        ),
        state,
    )
    assert verdict.reason_code == "allowed"
    assert "FAC-CONF-2018-001" in verdict.rule


def test_first_atlantic_commerce_outside_its_agreement_categories_is_not_trusted(
    customer: SubjectState,
) -> None:
    verdict = verdict_of(
        shared(["banking"], "first_atlantic_commerce", "transaction_processing", "billing_clerk"),
        customer,
    )
    assert verdict.reason_code == "recipient_not_trusted"
    assert verdict.rule.startswith("recipients.first_atlantic_commerce.categories")


def test_first_atlantic_commerce_outside_its_agreement_purposes_is_not_trusted(
    customer: SubjectState,
) -> None:
    verdict = verdict_of(
        shared(["name"], "first_atlantic_commerce", "billing", "billing_clerk"), customer
    )
    assert verdict.reason_code == "recipient_not_trusted"
    assert verdict.rule.startswith("recipients.first_atlantic_commerce.purposes")


def test_unknown_recipient_is_not_trusted(customer: SubjectState) -> None:
    verdict = verdict_of(shared(["name"], "unknown_partner", "billing", "billing_clerk"), customer)
    assert verdict.reason_code == "recipient_not_trusted"
    assert "'unknown_partner' is not a trusted recipient" in verdict.rule


# --------------------------------------------------------------------------- prohibited_collection


def test_card_data_via_online_tendering_is_refused_whole_and_not_recorded() -> None:
    item = collected(
        ["name", "credit_card"], ["transaction_processing"], channel="online_tendering"
    )
    verdict = verdict_of(item, SubjectState())
    assert verdict.reason_code == "prohibited_collection"
    assert verdict.rule.startswith("prohibited_collections[0] [INFORMATION COLLECTED]:")
    assert "credit_card may not be collected via online_tendering" in verdict.rule
    assert apply(item, verdict, SubjectState()) == SubjectState()


def test_card_data_via_another_channel_is_allowed() -> None:
    verdict = verdict_of(
        collected(["credit_card"], ["billing"], channel="in_person"), SubjectState()
    )
    assert verdict.reason_code == "allowed"


def test_collection_via_an_unknown_channel_or_of_an_unknown_category_is_prohibited() -> None:
    by_pigeon = verdict_of(collected(["name"], ["billing"], channel="pigeon"), SubjectState())
    assert by_pigeon.reason_code == "prohibited_collection"
    assert "'pigeon' is not a channel" in by_pigeon.rule
    shoe = verdict_of(collected(["shoe_size"], ["billing"]), SubjectState())
    assert shoe.reason_code == "prohibited_collection"


# --------------------------------------------------------------------------- state-based denials


def test_use_of_data_never_collected_is_not_collected(customer: SubjectState) -> None:
    verdict = verdict_of(used(["telephone"], "billing", "billing_clerk"), customer)
    assert verdict.reason_code == "not_collected"
    assert "no telephone was collected" in verdict.rule


def test_use_for_an_undeclared_incompatible_purpose_is_not_declared(
    customer: SubjectState,
) -> None:
    verdict = verdict_of(used(["email"], "correspondence_followup", "customer_service"), customer)
    assert verdict.reason_code == "purpose_not_declared"
    assert verdict.rule.startswith("purposes.correspondence_followup.compatible_with")
    assert "collected for billing, account_notices" in verdict.rule


def test_consent_withdrawn_then_regranted() -> None:
    state = run([collected(["email"], ["service_provision"])])
    offer = used(["email"], "service_information", "marketing", datetime(2026, 3, 1, tzinfo=UTC))
    assert verdict_of(offer, state).reason_code == "allowed"  # granted by default

    withdraw = consent("service_information", False, datetime(2026, 2, 10, tzinfo=UTC))
    assert verdict_of(withdraw, state).reason_code == "allowed"
    state = run([withdraw], state)
    denied = verdict_of(offer, state)
    assert denied.reason_code == "consent_withdrawn"
    assert denied.rule.startswith("purposes.service_information.basis")

    state = run([consent("service_information", True, datetime(2026, 2, 20, tzinfo=UTC))], state)
    assert verdict_of(offer, state).reason_code == "allowed"


def test_consent_for_a_necessary_or_prohibited_purpose_cannot_change() -> None:
    billing = verdict_of(consent("billing", False), SubjectState())
    assert billing.reason_code == "purpose_not_permitted"
    assert "rests on necessity, not consent" in billing.rule
    assert apply(consent("billing", False), billing, SubjectState()) == SubjectState()
    assert verdict_of(consent("sale", True), SubjectState()).reason_code == "purpose_not_permitted"


def test_use_after_erasure_is_subject_erased(customer: SubjectState) -> None:
    state = run([deletion(["email"])], customer)
    verdict = verdict_of(used(["email"], "billing", "billing_clerk"), state)
    assert verdict.reason_code == "subject_erased"
    assert verdict.rule.startswith("retention.email [RETENTION OF DATA]:")
    # the order of checks: erased is judged before purpose compatibility
    assert verdict_of(used(["email"], "correspondence_followup", "system"), state).reason_code == (
        "subject_erased"
    )


def test_use_after_retention_sweep_is_retention_expired() -> None:
    state = run([collected(["web_log"], ["website_administration"], channel="website")])
    sweep_at = datetime(2026, 6, 1, tzinfo=UTC)
    assert expired(state, BOOK, sweep_at) == ["web_log"]
    state = mark_erased(state, ["web_log"], RETENTION_EXPIRED, sweep_at)
    verdict = verdict_of(
        used(["web_log"], "website_improvement", "web_admin", datetime(2026, 6, 2, tzinfo=UTC)),
        state,
    )
    assert verdict.reason_code == "retention_expired"
    assert "retention period ran out" in verdict.rule


def test_deletion_request_is_allowed_and_names_what_is_held(customer: SubjectState) -> None:
    verdict = verdict_of(deletion(None), customer)
    assert verdict.reason_code == "allowed"
    assert verdict.categories == ("address", "banking", "email", "name")


def test_deletion_request_naming_an_unknown_category_is_denied_and_erases_nothing(
    customer: SubjectState,
) -> None:
    verdict = verdict_of(deletion(["email", "emails"]), customer)
    assert (verdict.decision, verdict.reason_code) == ("deny", "not_collected")
    assert "'emails'" in verdict.rule
    assert "nothing was erased" in verdict.rule
    assert run([deletion(["email", "emails"])], customer) == customer


def test_a_request_or_consent_change_from_a_role_the_policy_does_not_know_changes_nothing(
    customer: SubjectState,
) -> None:
    request = {**deletion(None), "actor": {"id": "x-1", "role": "intern"}}
    verdict = verdict_of(request, customer)
    assert (verdict.decision, verdict.reason_code) == ("deny", "role_not_authorized")
    assert "'intern' is not a role" in verdict.rule
    assert run([request], customer) == customer
    listed = {**deletion(["email"]), "actor": {"id": "x-1", "role": "intern"}}
    assert verdict_of(listed, customer).categories == ("email",)

    change = {**consent("service_information", False), "actor": {"id": "x-1", "role": "intern"}}
    assert verdict_of(change, customer).reason_code == "role_not_authorized"
    assert run([change], customer) == customer
    staff = {**deletion(None), "actor": {"id": "cs-1", "role": "customer_service"}}
    assert verdict_of(staff, customer).reason_code == "allowed"  # staff file it for the customer


# --------------------------------------------------------------------------- policy versions


def test_use_is_judged_by_the_policy_version_in_force_when_it_occurred() -> None:
    state = run([collected(["email"], ["customer_support"], at=datetime(2020, 5, 1, tzinfo=UTC))])
    before = used(
        ["email"], "correspondence_followup", "customer_service", datetime(2025, 6, 1, tzinfo=UTC)
    )
    after = used(
        ["email"], "correspondence_followup", "customer_service", datetime(2026, 2, 1, tzinfo=UTC)
    )
    old = verdict_of(before, state)
    assert (old.reason_code, old.policy_version) == ("purpose_not_declared", "2018-08-01")
    new = verdict_of(after, state)
    assert (new.reason_code, new.policy_version) == ("allowed", "2026-01-01")


def test_recipient_added_by_a_later_version_is_untrusted_before_it() -> None:
    state = run([collected(["name", "address"], ["billing"], at=datetime(2024, 1, 1, tzinfo=UTC))])
    before = shared(
        ["address"],
        "statement_print_house",
        "billing",
        "billing_clerk",
        datetime(2025, 1, 1, tzinfo=UTC),
    )
    after = shared(
        ["address"],
        "statement_print_house",
        "billing",
        "billing_clerk",
        datetime(2026, 1, 2, tzinfo=UTC),
    )
    assert verdict_of(before, state).reason_code == "recipient_not_trusted"
    assert verdict_of(after, state).reason_code == "allowed"


def test_events_before_the_first_version_are_judged_by_it() -> None:
    item = used(["email"], "sale", "marketing", datetime(2015, 1, 1, tzinfo=UTC))
    assert verdict_of(item, SubjectState()).policy_version == "2018-08-01"


# --------------------------------------------------------------------------- apply


def test_rectification_supersedes_the_collection_and_keeps_declared_purposes(
    customer: SubjectState,
) -> None:
    again = collected(
        ["address"],
        ["service_provision"],
        channel="paper_form",
        at=T0.replace(day=20),
        key_version=2,
    )
    state = run([again], customer)
    record = state.collected["address"]
    assert record.key_version == 2
    assert record.collected_at == T0.replace(day=20).isoformat()
    assert record.purposes == ("billing", "account_notices", "service_provision")
    assert state.collected["email"] == customer.collected["email"]


def test_collecting_an_erased_category_again_starts_afresh_with_the_new_key(
    customer: SubjectState,
) -> None:
    state = run([deletion(["email"])], customer)
    state = run(
        [collected(["email"], ["customer_support"], at=T0.replace(month=4), key_version=2)], state
    )
    assert "email" not in state.erased
    assert state.collected["email"].purposes == ("customer_support",)
    assert state.collected["email"].key_version == 2


def test_a_denied_event_changes_nothing(customer: SubjectState) -> None:
    item = collected(["banking"], ["billing"], role="marketing", key_version=7)
    verdict = verdict_of(item, customer)
    assert not verdict.allowed
    assert apply(item, verdict, customer) is customer


# --------------------------------------------------------------------------- erasure and retention


def test_erasure_plan_retains_legally_required_categories_with_basis_and_until(
    customer: SubjectState,
) -> None:
    state = run([collected(["service_account"], ["billing"])], customer)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    plan = plan_erasure(state, None, BOOK.in_force(at), at)
    assert plan.shred == ("address", "email", "name")
    assert [r.to_record() for r in plan.retained] == [
        {
            "category": "banking",
            "basis": "financial records the Commission must keep for tax and audit",
            "until": "2032-02-02",
        },
        {
            "category": "service_account",
            "basis": "financial records (billings, payments, credit) the Commission must keep "
            "for tax and audit",
            "until": "2032-02-02",
        },
    ]
    assert plan.status == "completed"
    after = apply_erasure(state, plan, at)
    assert set(after.erased) == {"address", "email", "name"}
    assert {c: e.reason_code for c, e in after.erased.items()} == dict.fromkeys(
        ("address", "email", "name"), SUBJECT_ERASED
    )
    assert after.held["banking"].until == "2032-02-02"
    assert "banking" in after.collected


def test_erasure_plan_for_listed_categories_reports_repeats_and_unknowns(
    customer: SubjectState,
) -> None:
    state = run([deletion(["email"])], customer)
    plan = plan_erasure(state, ["email", "telephone", "name"], BOOK.latest, LATER)
    assert plan.shred == ("name",)
    assert plan.already_erased == ("email",)
    assert plan.not_held == ("telephone",)
    repeat = plan_erasure(state, ["email"], BOOK.latest, LATER)
    assert repeat.status == "nothing_held"


def test_erasure_shreds_keyed_categories_of_refused_collections_and_retains_only_held_ones(
    customer: SubjectState,
) -> None:
    # date_of_birth and service_account were only ever refused (their ciphertext is on the
    # bus under live keys); service_account has a legal hold, but nothing of it is held
    refused = collected(["date_of_birth", "service_account"], ["billing"], role="web_admin")
    state = run([refused], customer)
    keyed = ["address", "banking", "date_of_birth", "email", "name", "service_account"]
    plan = plan_erasure(state, None, BOOK.latest, LATER, keyed=keyed)
    assert plan.shred == ("address", "date_of_birth", "email", "name", "service_account")
    assert [r.category for r in plan.retained] == ["banking"]
    partial = plan_erasure(state, ["date_of_birth"], BOOK.latest, LATER, keyed=keyed)
    assert (partial.shred, partial.status) == (("date_of_birth",), "completed")
    after = apply_erasure(state, partial, LATER)
    assert after.erased["date_of_birth"].reason_code == SUBJECT_ERASED
    assert "date_of_birth" not in after.collected
    repeat = plan_erasure(after, ["date_of_birth"], BOOK.latest, LATER, keyed=[])
    assert repeat.already_erased == ("date_of_birth",) and repeat.shred == ()
    without_keys = plan_erasure(state, ["date_of_birth"], BOOK.latest, LATER)
    assert without_keys.status == "nothing_held"


def test_rekeyed_records_the_new_key_version_of_held_categories_only(
    customer: SubjectState,
) -> None:
    after = rekeyed(customer, {"email": 3, "telephone": 2})
    assert after.collected["email"].key_version == 3
    assert after.collected["email"].purposes == customer.collected["email"].purposes
    assert after.collected["name"] == customer.collected["name"]
    assert "telephone" not in after.collected


def test_erasure_shreds_financial_records_whose_legal_hold_has_ended() -> None:
    state = run([collected(["banking"], ["billing"], at=datetime(2019, 1, 1, tzinfo=UTC))])
    at = datetime(2026, 3, 1, tzinfo=UTC)
    plan = plan_erasure(state, None, BOOK.in_force(at), at)
    assert plan.shred == ("banking",)
    assert plan.retained == ()


def test_retention_expiry_counts_from_the_latest_collection() -> None:
    state = run([collected(["web_log"], ["website_administration"], channel="website")])
    assert expired(state, BOOK, datetime(2026, 5, 3, 8, 59, tzinfo=UTC)) == []
    assert expired(state, BOOK, datetime(2026, 5, 3, 9, 0, tzinfo=UTC)) == ["web_log"]
    refreshed = run(
        [
            collected(
                ["web_log"], ["website_administration"], channel="website", at=T0.replace(month=4)
            )
        ],
        state,
    )
    assert expired(refreshed, BOOK, datetime(2026, 5, 3, 9, 0, tzinfo=UTC)) == []


def test_financial_records_never_expire_until_an_erasure_request_then_after_the_hold(
    customer: SubjectState,
) -> None:
    assert expired(customer, BOOK, datetime(2040, 1, 1, tzinfo=UTC)) == []
    state = run([deletion(None)], customer)
    assert expired(state, BOOK, datetime(2032, 2, 2, 23, 0, tzinfo=UTC)) == []
    assert expired(state, BOOK, datetime(2032, 2, 3, tzinfo=UTC)) == ["banking"]
    swept = mark_erased(state, ["banking"], RETENTION_EXPIRED, datetime(2032, 2, 3, tzinfo=UTC))
    assert swept.collected == {}
    assert swept.held == {}
    assert swept.erased["banking"].reason_code == RETENTION_EXPIRED


def test_mark_erased_refuses_a_reason_that_is_not_an_erasure(customer: SubjectState) -> None:
    with pytest.raises(ValueError, match="reason_code must be one of"):
        mark_erased(customer, ["email"], "allowed", LATER)


# --------------------------------------------------------------------------- state, purity


def test_state_round_trips_through_json(customer: SubjectState) -> None:
    state = run([consent("personalization", False), deletion(["email"]), deletion(None)], customer)
    data = json.loads(json.dumps(state.to_dict()))
    assert SubjectState.from_dict(data) == state
    assert SubjectState.from_dict(None) == SubjectState()
    assert data["format"] == 1


@pytest.mark.parametrize(
    "data",
    [
        {"collected": {"email": {"purposes": ["billing"]}}},
        {"erased": {"email": {"reason_code": "allowed", "erased_at": "2026-01-01"}}},
        {"format": 99},
        {"collected": []},
    ],
)
def test_malformed_state_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(StateError):
        SubjectState.from_dict(data)


def test_decide_is_pure(customer: SubjectState) -> None:
    item = shared(["name"], "first_atlantic_commerce", "transaction_processing", "system")
    item_before = copy.deepcopy(item)
    state_before = customer.to_dict()
    first = decide(item, customer, BOOK)
    assert all(decide(item, customer, BOOK) == first for _ in range(100))
    assert item == item_before
    assert customer.to_dict() == state_before


def test_a_value_that_is_not_a_customer_event_raises_event_error() -> None:
    with pytest.raises(EventError):
        decide({"kind": "used", "occurred_at": T0}, SubjectState(), BOOK)


_VOCABULARY = BOOK.vocabulary()
_ODD_NAMES = ["", "x" * 100, "unknown_partner", "first_atlantic_commerce", "online_tendering"]
_names = st.sampled_from(
    [*sorted(_VOCABULARY.categories | _VOCABULARY.purposes | _VOCABULARY.roles), *_ODD_NAMES]
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["collected", "used", "shared", "consent_changed", "deletion_requested"]),
    names=st.lists(_names, max_size=4),
    name=_names,
    role=_names,
    granted=st.booleans(),
    day=st.integers(min_value=0, max_value=6000),
)
def test_every_event_gets_exactly_one_contract_verdict(
    kind: str, names: list[str], name: str, role: str, granted: bool, day: int
) -> None:
    at = datetime.fromordinal(datetime(2016, 1, 1).toordinal() + day).replace(tzinfo=UTC)
    bodies: dict[str, dict[str, Any]] = {
        "collected": {
            "channel": name,
            "purposes": names,
            "data": [{"category": c, "key_version": 1} for c in names],
        },
        "used": {"categories": names, "purpose": name},
        "shared": {"categories": names, "recipient": name, "purpose": role},
        "consent_changed": {"purpose": name, "granted": granted},
        "deletion_requested": {"request_id": "r", "categories": names or None},
    }
    item = event(kind, bodies[kind], role, at)
    state = run([collected(["name", "email"], ["billing"], at=at)])
    verdict = decide(item, state, BOOK)
    assert verdict.reason_code in REASON_CODES
    assert verdict.policy_version in BOOK.versions
    assert "x" * 100 not in verdict.rule  # names from events are clipped


def test_a_value_the_publisher_withheld_is_never_recorded_as_collected() -> None:
    item = collected(["name"], ["billing"])
    item["body"]["data"].append(
        {"category": "email", "key_version": 0, "nonce": b"", "ciphertext": b""}
    )
    verdict = Verdict("allow", "allowed", "test", "2026-01-01", ("name", "email"))
    assert set(apply(item, verdict, SubjectState()).collected) == {"name"}


# --------------------------------------------------------------------------- key versions


def test_allowed_collections_record_their_key_versions_and_refused_ones_nothing() -> None:
    state = run(
        [
            collected(["email"], ["billing"], key_version=1),
            collected(["email"], ["billing"], key_version=4, at=LATER),  # another producer's
            collected(["email"], ["sale"], key_version=6, at=LATER),  # refused
        ]
    )
    assert state.versions("email") == KeyVersions(allowed=(1, 4))
    assert state.collected["email"].key_version == 4


def test_an_erasure_reaches_the_versions_it_names_and_every_allowed_one_before_it() -> None:
    state = run(
        [
            collected(["email"], ["billing"], key_version=1),
            collected(["email"], ["billing"], key_version=5, at=LATER),
        ]
    )
    # named: up to 2, and 5 (an allowed value before the request, under a newer version)
    assert erasure_versions(state, "email", 2, newest=7) == (2, (5,))
    # naming none: every version the store has now
    assert erasure_versions(state, "email", None, newest=7) == (7, ())
    # a category never collected: only what the request names
    assert erasure_versions(state, "fax", 0, newest=3) == (0, ())


def test_ended_versions_are_kept_and_allowed_ones_they_cover_dropped() -> None:
    state = run([collected(["email"], ["billing"], key_version=3)])
    refused = end_versions(state, {}, {"email": [5], "name": [2]})
    assert refused.versions("email") == KeyVersions(0, (5,), (3,))
    assert refused.versions("name").is_ended(2) and not refused.versions("name").is_ended(1)
    erased = end_versions(refused, {"email": 4}, {})
    assert erased.versions("email") == KeyVersions(4, (5,), ())
    assert erased.versions("email").is_ended(1) and not erased.versions("email").is_ended(6)
    later = end_versions(erased, {"email": 6}, {})
    assert later.versions("email") == KeyVersions(6, (), ())


def test_key_versions_round_trip_through_json_and_the_common_case_is_left_implied() -> None:
    plain = run([collected(["email", "name"], ["billing"], key_version=2)])
    assert plain.to_dict()["keys"] == {}  # the held value's version alone: implied
    assert SubjectState.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain
    busy = end_versions(
        run([collected(["email"], ["billing"], key_version=7)], plain), {"name": 2}, {"fax": [3]}
    )
    data = json.loads(json.dumps(busy.to_dict()))
    assert data["keys"] == {
        "email": {"allowed": [2, 7]},
        "name": {"through": 2},
        "fax": {"ended": [3]},
    }
    assert SubjectState.from_dict(data) == busy
    older = dict(data)
    del older["keys"]  # written before versions were kept: the held versions are implied
    assert SubjectState.from_dict(older).versions("email") == KeyVersions(allowed=(7,))


def test_an_unreadable_value_refuses_the_collection_citing_the_policy() -> None:
    item = collected(["email", "name"], ["billing"])
    allowed = decide(item, SubjectState(), BOOK)

    refused = refuse_unreadable(allowed, {"email": "key version 3 was destroyed"}, BOOK)

    assert (refused.decision, refused.reason_code) == ("deny", VALUE_UNREADABLE)
    assert VALUE_UNREADABLE in REASON_CODES
    assert refused.rule.startswith("reason_codes.value_unreadable [RETENTION OF DATA]: ")
    assert "email: key version 3 was destroyed" in refused.rule
    assert refused.categories == ("email", "name")
    assert apply(item, refused, SubjectState()) == SubjectState()  # nothing held


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"purposes": ["billing"]}, False),
        ({"purposes": ["sale"]}, True),  # prohibited purpose
        ({"purposes": ["billing"], "role": "web_admin", "data": {"banking": "x"}}, True),
        (
            {
                "purposes": ["transaction_processing"],
                "channel": "online_tendering",
                "data": {"credit_card": "x", "name": "y"},
            },
            True,
        ),  # prohibited collection
    ],
)
def test_the_publishers_screen_foresees_exactly_the_refused_collections(
    fields: dict[str, Any], refused: bool
) -> None:
    line = {
        "kind": "collected",
        "subject_id": "C-1",
        "source": "web",
        "occurred_at": T0.isoformat(),
        "actor": {"id": "a", "role": fields.get("role", "system")},
        "channel": fields.get("channel", "web_form"),
        "purposes": fields["purposes"],
        "data": fields.get("data", {"email": "x@example.org"}),
    }
    event_ = validate(line, BOOK.vocabulary())
    assert RefusalScreen(BOOK).refuses(event_) is refused
    verdict = decide(decoded(event_), SubjectState(), BOOK)
    assert verdict.allowed is not refused  # the worker's verdict, without any state


def decoded(event_: Any) -> dict[str, Any]:
    from processors.explain import decoded_event

    return decoded_event(event_)
