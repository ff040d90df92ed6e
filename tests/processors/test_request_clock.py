"""The request clock (the policy's section on answering customers' requests) and the ledger
records of the privacy team's actions built on it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.exceptions import PolicyError
from processors.policy import Duration, PolicyBook, RequestClock, load_policies
from processors.reasons import ROLE_NOT_AUTHORIZED
from processors.requests import (
    Staff,
    closed,
    extended,
    extension_refusal,
    filed,
    parse_request_event_id,
    refused,
    refused_action,
    request_event_id,
    revealed,
)
from sinks.stored import decision_row
from streams.codec import SingleObjectCodec

REPO = Path(__file__).resolve().parents[2]
FIRST = REPO / "policy" / "2018-08-01.yaml"
DOC = REPO / "docs" / "console.md"
OFFICER = Staff("maria", "privacy_officer", "console")
REF = "ab" * 32


@pytest.fixture(scope="module")
def book() -> PolicyBook:
    return load_policies(REPO / "policy")


def gdpr_profile() -> dict[str, Any]:
    """The GDPR example of docs/console.md, as the docs show it."""
    text = DOC.read_text()
    block = re.search(r"<!-- gdpr-profile[^>]*-->\s*```yaml\n(.*?)```", text, re.S)
    assert block is not None, "docs/console.md lost its GDPR example"
    section: dict[str, Any] = yaml.safe_load(block.group(1))["request_clock"]
    return section


def with_clock(tmp_path: Path, section: Any) -> Path:
    document = yaml.safe_load(FIRST.read_text())
    if section is None:
        document.pop("request_clock")
    else:
        document["request_clock"] = section
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return tmp_path


def gdpr(tmp_path: Path) -> RequestClock:
    clock = load_policies(with_clock(tmp_path, gdpr_profile())).latest.request_clock
    assert clock is not None
    return clock


# --------------------------------------------------------------------------- this project's


def test_every_version_of_the_projects_policy_states_a_placeholder_clock(book: PolicyBook) -> None:
    for policy in book:
        clock = policy.request_clock
        assert clock is not None, policy.version
        assert clock.law == "Data Protection Act, 2011"
        assert clock.placeholder is True  # until the privacy officer confirms the periods
        assert clock.answer_within == Duration(days=30)
        assert clock.extension is not None and clock.extension.times == 1
        assert set(clock.refusals) == {"manifestly_unfounded", "excessive"}
        assert "Data Protection Act, 2011" in clock.cites.quote


def test_a_request_is_due_thirty_days_after_receipt_and_thirty_more_once_extended(
    book: PolicyBook,
) -> None:
    clock = book.latest.request_clock
    assert clock is not None
    received = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    assert clock.due(received) == received + timedelta(days=30)
    assert clock.due(received, extensions=1) == received + timedelta(days=60)
    assert clock.due(received, extensions=5) == received + timedelta(days=60)  # at most once


# --------------------------------------------------------------------------- the GDPR profile


def test_the_gdpr_profile_of_the_docs_is_one_month_extendable_once_by_two(tmp_path: Path) -> None:
    clock = gdpr(tmp_path)
    assert clock.placeholder is False
    assert str(clock.answer_cites) == (
        "Regulation (EU) 2016/679 (GDPR), Art. 12(3): without undue delay, and at the latest "
        "one month from receipt"
    )
    received = datetime(2027, 1, 31, 10, 0, tzinfo=UTC)
    assert clock.due(received) == datetime(2027, 2, 28, 10, 0, tzinfo=UTC)  # calendar months
    assert clock.due(received, extensions=1) == datetime(2027, 4, 28, 10, 0, tzinfo=UTC)
    assert clock.extension is not None
    assert clock.extension.notice_deadline(received) == datetime(2027, 2, 28, 10, 0, tzinfo=UTC)


def test_an_extension_is_refused_when_used_up_late_unlisted_or_the_request_is_closed(
    tmp_path: Path,
) -> None:
    clock = gdpr(tmp_path)
    received = datetime(2027, 1, 10, tzinfo=UTC)
    soon = received + timedelta(days=5)

    def why(**changes: Any) -> str | None:
        asked: dict[str, Any] = {
            "extensions_so_far": 0,
            "received": received,
            "reason": "complexity",
            "at": soon,
            "is_closed": False,
        }
        asked.update(changes)
        return extension_refusal(clock, **asked)

    assert why() is None
    assert "once only" in str(why(extensions_so_far=1))
    assert "must be recorded by 2027-02-10" in str(why(at=received + timedelta(days=31)))
    assert "'boredom' is not one of the policy's reasons" in str(why(reason="boredom"))
    assert why(is_closed=True) == "the request is closed"
    no_clock = extension_refusal(
        None, extensions_so_far=0, received=received, reason="complexity", at=soon, is_closed=False
    )
    assert no_clock == "the policy version states no request clock"


def test_a_policy_without_an_extension_allows_none(tmp_path: Path) -> None:
    section = gdpr_profile()
    section.pop("extension")
    clock = load_policies(with_clock(tmp_path, section)).latest.request_clock
    assert clock is not None and clock.extension is None
    received = datetime(2027, 1, 10, tzinfo=UTC)
    assert clock.due(received, extensions=1) == clock.due(received)
    why = extension_refusal(
        clock,
        extensions_so_far=0,
        received=received,
        reason="complexity",
        at=received,
        is_closed=False,
    )
    assert why == "Regulation (EU) 2016/679 (GDPR) allows no extension"


def test_a_policy_version_may_state_no_clock(tmp_path: Path) -> None:
    assert load_policies(with_clock(tmp_path, None)).latest.request_clock is None


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        (lambda s: s.update(deadline="P1M"), "request_clock.deadline", "unknown key"),
        (lambda s: s["answer"].update(within="1 month"), "request_clock.answer.within", "ISO 8601"),
        (lambda s: s["answer"].pop("provision"), "request_clock.answer.provision", "is required"),
        (lambda s: s["extension"].update(times=0), "request_clock.extension.times", "at least 1"),
        (lambda s: s.update(placeholder="yes"), "request_clock.placeholder", "true or false"),
        (lambda s: s["refusal"]["excessive"].pop("provision"),
         "request_clock.refusal.excessive.provision", "is required"),
        (lambda s: s["extension"].update(reasons={"Complex!": "x"}),
         "request_clock.extension.reasons.Complex!", "lower_snake_case"),
        (lambda s: s.update(cites={"section": "NOWHERE", "quote": "x"}),
         "request_clock.cites.section", "not one of this file's sections"),
    ],
)  # fmt: skip
def test_a_wrong_clock_is_refused_naming_where(
    tmp_path: Path, change: Any, path: str, reason: str
) -> None:
    section = gdpr_profile()
    change(section)
    with pytest.raises(PolicyError) as caught:
        load_policies(with_clock(tmp_path, section))
    assert (caught.value.path, reason in caught.value.reason) == (path, True), caught.value


# --------------------------------------------------------------------------- the records


@pytest.mark.parametrize("request_id", ["REQ-1", "DEMO-REQ-40", "a/b/extended/3", "7"])
def test_a_request_records_event_id_names_its_request(request_id: str) -> None:
    for action, number in (("filed", 1), ("extended", 2), ("refused", 1), ("closed", 1)):
        parsed = parse_request_event_id(request_event_id(request_id, action, number))
        assert parsed is not None
        assert (parsed.request_id, parsed.action, parsed.number) == (request_id, action, number)
    assert parse_request_event_id("ev-000001") is None
    assert parse_request_event_id("reveal/abc") is None


def test_every_record_is_a_valid_decision_without_personal_data(book: PolicyBook) -> None:
    policy = book.latest
    at = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    made = [
        filed(OFFICER, request_id="R1", request_kind="erasure", subject_ref=REF,
              categories=["email", "name"], policy=policy, at=at),
        extended(OFFICER, request_id="R1", request_kind="access", subject_ref=REF, number=1,
                 reason="complexity", policy=policy, at=at),
        refused(OFFICER, request_id="R1", request_kind="access", subject_ref=REF,
                ground="excessive", policy=policy, at=at),
        closed(OFFICER, request_id="R1", subject_ref=REF, policy=policy, at=at),
        revealed(OFFICER, subject_ref=REF, categories=["name", "email"], policy=policy, at=at),
        refused_action(Staff("ann", "analyst", "console"), kind="values_revealed",
                       subject_ref=REF, reason_code=ROLE_NOT_AUTHORIZED,
                       detail="console: only a privacy officer may reveal values",
                       policy=policy, at=at),
    ]  # fmt: skip
    codec = SingleObjectCodec()
    for record in made:
        row = decision_row(record)  # what the ledger stage appends
        assert row["subject_ref"] == REF and row["source_offset"] == -1
        decoded = codec.decode("lifecycle.Decision", codec.encode("lifecycle.Decision", record))
        assert decoded["event_id"] == record["event_id"]
    kinds = [(r["kind"], r["decision"], r["reason_code"]) for r in made]
    assert kinds == [
        ("request_filed", "allow", "allowed"),
        ("request_extended", "allow", "complexity"),
        ("request_refused", "deny", "excessive"),
        ("request_closed", "allow", "allowed"),
        ("values_revealed", "allow", "allowed"),
        ("values_revealed", "deny", "role_not_authorized"),
    ]
    assert {r["recipient"] for r in made} == {"maria", "ann"}
    assert made[0]["categories"] == ["email", "name"] and made[0]["purpose"] == "erasure"
    assert "Data Protection Act, 2011" in made[1]["rule"]
    assert made[4]["categories"] == ["email", "name"] and made[4]["rule"].startswith("roles.")
    with pytest.raises(ValueError, match="not a refusal of the console"):
        refused_action(OFFICER, kind="x", subject_ref=REF, reason_code="allowed", detail="",
                       policy=policy, at=at)  # fmt: skip
