"""``lifecycle policy show`` and ``lifecycle policy check``: offline, and never printing values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from core.instants import parse_instant
from lifecycle.cli.policy import policy
from processors.explain import check_event, describe_policy
from processors.policy import load_policies

REPO_POLICY = Path(__file__).resolve().parents[2] / "policy"
BOOK = load_policies(REPO_POLICY)

PERSONAL = ("C-10042", "Jane Example", "jane@example.org", "1 Sample Street", "ACCT-0000")
ACTOR = {"id": "clerk-1", "role": "billing_clerk"}


def line(**fields: Any) -> str:
    base = {"source": "billing", "subject_id": "C-10042", "actor": ACTOR}
    return json.dumps({**base, **fields})


SIGNUP = line(
    kind="collected",
    event_id="e-1",
    occurred_at="2026-02-02T09:00:00+00:00",
    actor={"id": "web", "role": "system"},
    channel="web_form",
    purposes=["billing", "account_notices"],
    data={
        "name": "Jane Example",
        "email": "jane@example.org",
        "address": "1 Sample Street",
        "banking": "ACCT-0000-EXAMPLE",
    },
)
ERASE_EMAIL = line(
    kind="deletion_requested",
    event_id="e-2",
    occurred_at="2026-02-03T10:00:00+00:00",
    actor={"id": "po-1", "role": "privacy_officer"},
    request_id="REQ-1",
    categories=["email"],
)
USE_EMAIL = line(
    kind="used",
    event_id="e-3",
    occurred_at="2026-02-04T10:00:00+00:00",
    categories=["email"],
    purpose="billing",
)


def invoke(*args: str, stdin: str | None = None, policy_dir: Path = REPO_POLICY) -> Result:
    runner = CliRunner()
    return runner.invoke(
        policy, list(args), input=stdin, env={"LIFECYCLE_POLICY_DIR": str(policy_dir)}
    )


def assert_no_personal_data(output: str) -> None:
    for value in PERSONAL:
        assert value not in output


# --------------------------------------------------------------------------- show


def test_show_prints_the_version_in_force_now_with_its_rules() -> None:
    result = invoke("show")
    assert result.exit_code == 0, result.output
    assert f"version {BOOK.in_force(datetime.now(UTC)).version}" in result.output
    assert "DISCLOSURE OF INFORMATION TO OUTSIDE PARTIES" in result.output
    assert "credit_card via online_tendering" in result.output


def test_show_at_a_date_prints_the_version_then() -> None:
    result = invoke("show", "--at", "2020-01-01")
    assert result.exit_code == 0, result.output
    assert "version 2018-08-01" in result.output
    assert "statement_print_house" not in result.output


def test_show_json_describes_every_rule_with_its_citation() -> None:
    result = invoke("show", "--at", "2026-01-01T00:00:00+00:00", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["versions"] == ["2018-08-01", "2026-01-01"]
    described = document["policy"]
    assert described["version"] == "2026-01-01"
    assert described["purposes"]["personalization"]["basis"] == "consent"
    assert described["purposes"]["legal_compliance"]["compatible_with"] == "all"
    assert described["recipients"]["first_atlantic_commerce"]["categories"] == [
        "address",
        "credit_card",
        "email",
        "name",
    ]
    assert described["retention"]["banking"]["keep_for"] == "P6Y"
    assert described["prohibited_collections"][0]["cites"]["section"] == "INFORMATION COLLECTED"


def test_every_version_describes_as_json() -> None:
    for version in BOOK:
        json.dumps(describe_policy(version))


def test_show_refuses_a_bad_date() -> None:
    result = invoke("show", "--at", "yesterday")
    assert result.exit_code == 2
    assert "is not an ISO date" in result.output


def test_show_takes_the_date_as_an_argument_or_as_at() -> None:
    positional = invoke("show", "2025-01-01")
    assert positional.exit_code == 0, positional.output
    assert positional.output.startswith(
        "Customer Data Privacy Policy, version 2018-08-01 (in force at 2025-01-01T00:00:00+00:00)"
    )
    assert positional.output == invoke("show", "--at", "2025-01-01").output
    later = json.loads(invoke("show", "2026-02-01", "--json").output)
    assert (later["at"], later["policy"]["version"]) == ("2026-02-01T00:00:00+00:00", "2026-01-01")
    assert invoke("show", "2025-01-01", "--at", "2025-01-01").exit_code == 0
    both = invoke("show", "2025-01-01", "--at", "2026-02-01")
    assert both.exit_code == 2
    assert "give the date once" in both.output
    bad = invoke("show", "yesterday")
    assert bad.exit_code == 2
    assert "is not an ISO date" in bad.output


def test_an_invalid_policy_dir_stops_with_file_path_and_reason(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("version: '1'\nchannels: {}\n", encoding="utf-8")
    result = invoke("show", policy_dir=tmp_path)
    assert result.exit_code == 1
    assert f"{tmp_path / 'broken.yaml'}: effective_from: is required" in result.output


# --------------------------------------------------------------------------- check


def test_check_prints_decision_reason_rule_and_version_without_values() -> None:
    result = invoke("check", SIGNUP)
    assert result.exit_code == 0, result.output
    assert "decision:       allow" in result.output
    assert "reason_code:    allowed" in result.output
    assert "rule:           channels.web_form [INFORMATION COLLECTED]" in result.output
    assert "policy_version: 2026-01-01" in result.output
    assert_no_personal_data(result.output)


def test_check_refuses_sale() -> None:
    sale = line(kind="used", occurred_at="2026-02-02T09:06:00+00:00", categories=["email"])
    result = invoke("check", sale[:-1] + ', "purpose": "sale"}', "--json")
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.output)
    assert (verdict["decision"], verdict["reason_code"]) == ("deny", "purpose_not_permitted")


def test_check_refuses_card_data_via_online_tendering_without_printing_it() -> None:
    card = line(
        kind="collected",
        channel="online_tendering",
        purposes=["transaction_processing"],
        data={"credit_card": "4000 0000 0000 0002"},
    )
    result = invoke("check", card)
    assert "reason_code:    prohibited_collection" in result.output
    assert "4000" not in result.output


def test_check_with_state_sees_the_erasure(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    other = line(kind="deletion_requested", subject_id="C-99999", request_id="R", categories=None)
    state.write_text("\n".join([SIGNUP, "", other, ERASE_EMAIL]) + "\n")
    result = invoke("check", USE_EMAIL, "--state", str(state), "--json")
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.output)
    assert verdict["reason_code"] == "subject_erased"
    assert verdict["prior_events"] == 2  # the other customer's line is not theirs
    assert_no_personal_data(result.output)


def test_check_without_state_says_not_collected() -> None:
    result = invoke("check", USE_EMAIL)
    assert "reason_code:    not_collected" in result.output


def test_check_reads_the_event_from_stdin() -> None:
    result = invoke("check", "-", stdin=SIGNUP + "\n")
    assert result.exit_code == 0, result.output
    assert "decision:       allow" in result.output


def test_check_at_judges_under_the_version_in_force_then(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    support = line(
        kind="collected",
        occurred_at="2020-05-01T00:00:00+00:00",
        channel="telephone",
        purposes=["customer_support"],
        data={"email": "jane@example.org"},
    )
    state.write_text(support + "\n")
    followup = line(kind="used", categories=["email"], purpose="correspondence_followup")
    old = invoke("check", followup, "--state", str(state), "--at", "2025-06-01", "--json")
    new = invoke("check", followup, "--state", str(state), "--at", "2026-06-01", "--json")
    assert json.loads(old.output)["reason_code"] == "purpose_not_declared"
    assert json.loads(old.output)["policy_version"] == "2018-08-01"
    assert json.loads(new.output)["reason_code"] == "allowed"
    assert json.loads(new.output)["policy_version"] == "2026-01-01"


def test_check_refuses_a_line_the_publisher_would_refuse_naming_the_field() -> None:
    result = invoke("check", '{"kind": "used",')
    assert result.exit_code == 1
    assert "EVENT_JSON: (line): malformed JSON" in result.output
    unknown = invoke("check", line(kind="used", categories=["shoe_size"], purpose="billing"))
    assert "EVENT_JSON: categories[0]: unknown category" in unknown.output


@pytest.mark.parametrize(
    ("fields", "reason_code", "refused_field"),
    [
        (
            {"kind": "used", "categories": ["shoe_size"], "purpose": "billing"},
            "role_not_authorized",
            "categories[0]: unknown category 'shoe_size'",
        ),
        (
            {"kind": "used", "categories": ["email"], "purpose": "debt_resale"},
            "purpose_not_permitted",
            "purpose: unknown purpose 'debt_resale'",
        ),
        (
            {
                "kind": "collected",
                "channel": "web_form",
                "purposes": ["billing"],
                "data": {"shoe_size": "EU 44 wide"},
            },
            "prohibited_collection",
            "data.shoe_size: unknown category",
        ),
        (
            {"kind": "consent_changed", "purpose": "debt_resale", "granted": False},
            "purpose_not_permitted",
            "purpose: unknown purpose 'debt_resale'",
        ),
    ],
)
def test_check_gives_the_workers_decision_on_a_name_the_publisher_refuses(
    fields: dict[str, Any], reason_code: str, refused_field: str
) -> None:
    event = line(occurred_at="2026-02-02T09:00:00+00:00", **fields)
    text = invoke("check", event)
    assert text.exit_code == 1
    assert "decision:       deny" in text.output
    assert f"reason_code:    {reason_code}" in text.output
    assert f"publisher:      would refuse this line ({refused_field}" in text.output
    assert f"EVENT_JSON: {refused_field}" in text.output
    assert "the publisher would refuse this line" in text.output
    assert "EU 44 wide" not in text.output
    assert_no_personal_data(text.output)
    as_json = invoke("check", event, "--json")
    verdict = json.loads(as_json.stdout)
    assert (verdict["decision"], verdict["reason_code"]) == ("deny", reason_code)
    assert verdict["publisher_refusal"].startswith(refused_field)


def test_check_still_refuses_without_a_decision_a_value_where_a_name_belongs() -> None:
    misplaced = line(kind="used", categories=["Jane Example"], purpose="billing")
    result = invoke("check", misplaced)
    assert result.exit_code == 1
    assert "decision:" not in result.output
    assert "EVENT_JSON: categories[0]: unknown category (a value that is not a name)" in (
        result.output
    )
    assert_no_personal_data(result.output)


def test_check_of_a_line_the_publisher_accepts_has_no_refusal() -> None:
    result = invoke("check", SIGNUP, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["publisher_refusal"] is None


def test_check_names_the_bad_state_line(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    state.write_text(SIGNUP + "\n" + line(kind="used", occurred_at="not a time") + "\n")
    result = invoke("check", USE_EMAIL, "--state", str(state))
    assert result.exit_code == 1
    assert "state line 2: occurred_at" in result.output
    assert_no_personal_data(result.output)


def test_replayed_state_assumes_retention_sweeps_ran() -> None:
    visit = line(
        kind="collected",
        occurred_at="2026-01-10T00:00:00+00:00",
        actor={"id": "web", "role": "system"},
        channel="website",
        purposes=["website_administration"],
        data={"web_log": "203.0.113.9 /outages"},
    )
    later = line(
        kind="used",
        occurred_at="2026-06-01T00:00:00+00:00",
        actor={"id": "w", "role": "web_admin"},
        categories=["web_log"],
        purpose="website_improvement",
    )
    result = check_event(later, BOOK, state_lines=[visit])
    assert result.verdict.reason_code == "retention_expired"
    soon = check_event(later, BOOK, state_lines=[visit], at=parse_instant("2026-02-01"))
    assert soon.verdict.reason_code == "allowed"


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-01-01", "2026-01-01T00:00:00+00:00"),
        ("2026-01-01T05:00:00", "2026-01-01T05:00:00+00:00"),
        ("2026-01-01T05:00:00-04:00", "2026-01-01T05:00:00-04:00"),
    ],
)
def test_parse_instant_reads_dates_and_date_times(text: str, iso: str) -> None:
    assert parse_instant(text).isoformat() == iso
