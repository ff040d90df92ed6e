"""The policy files: loading, validation errors that name file/path/reason, versions in force."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.errors import ConfigurationError, LifecycleError
from processors.exceptions import PolicyError
from processors.policy import Citation, Duration, Policy, PolicyBook, load_policies

from fixtures.broker import run_cli

REPO_POLICY = Path(__file__).resolve().parents[2] / "policy"
FIRST = REPO_POLICY / "2018-08-01.yaml"
PUBLISHED = REPO_POLICY / "customer-data-privacy-policy.txt"


@pytest.fixture(scope="module")
def book() -> PolicyBook:
    return load_policies(REPO_POLICY)


def write_policy(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def edited(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A policy dir holding the first version, changed by ``change`` (on the parsed YAML)."""
    document = yaml.safe_load(FIRST.read_text(encoding="utf-8"))
    change(document)
    write_policy(tmp_path, "policy.yaml", yaml.safe_dump(document, sort_keys=False))
    return tmp_path


def load_error(directory: Path) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load_policies(directory)
    return caught.value


# --------------------------------------------------------------------------- the repo's policy


def test_repo_policy_loads_every_version_oldest_first(book: PolicyBook) -> None:
    assert book.versions == ("2018-08-01", "2026-01-01")
    assert book.policies[0].effective_from == datetime(2018, 8, 1, tzinfo=UTC)


def citations(policy: Policy) -> list[Citation]:
    """Every citation in ``policy``: each rule's, all of them, and effective_from's."""
    rules: list[Any] = [
        *policy.categories.values(),
        *policy.channels.values(),
        *policy.purposes.values(),
        *policy.prohibited_purposes.values(),
        *policy.roles.values(),
        *policy.recipients.values(),
        *policy.prohibited_collections.values(),
        *policy.retentions.values(),
    ]
    clock = policy.request_clock
    return [
        *policy.effective_from_cites.every(),
        *(citation for rule in rules for citation in rule.cites.every()),
        *(clock.cites.every() if clock is not None else ()),
        *(citation for cites in policy.reason_codes.values() for citation in cites.every()),
    ]


def plain(text: str) -> str:
    """Curly quotes as ASCII (as the policy files write them), whitespace collapsed."""
    for curly, ascii_ in (("\u2019", "'"), ("\u2018", "'"), ("\u201c", '"'), ("\u201d", '"')):
        text = text.replace(curly, ascii_)
    return " ".join(text.split())


def published_sections(sections: tuple[str, ...]) -> dict[str, str]:
    """The published text, section title -> its text (a title is a line of its own)."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in PUBLISHED.read_text(encoding="utf-8").splitlines():
        title = plain(line)
        if title in sections:
            current = out.setdefault(title, [])
        else:
            current.append(line)
    return {title: plain(" ".join(lines)) for title, lines in out.items()}


def test_every_rule_cites_a_section_of_its_file(book: PolicyBook) -> None:
    for policy in book:
        for citation in citations(policy):
            assert citation.section in policy.sections
            assert citation.quote


def test_every_quote_is_word_for_word_from_its_section_of_the_published_policy(
    book: PolicyBook,
) -> None:
    for policy in book:
        text = published_sections(policy.sections)
        assert set(text) == set(policy.sections)  # the file lists the published sections
        for citation in citations(policy):
            assert plain(citation.quote) in text[citation.section], citation


def test_every_published_section_is_cited_by_some_rule(book: PolicyBook) -> None:
    for policy in book:
        assert {c.section for c in citations(policy)} == set(policy.sections), policy.version


def test_consent_cookies_minimisation_and_effective_date_cite_their_sections(
    book: PolicyBook,
) -> None:
    first, revised = book.get("2018-08-01"), book.get("2026-01-01")
    assert first.effective_from_cites == Citation(
        "REVISIONS TO THE PRIVACY POLICY", "This Policy takes effect from August 1st, 2018."
    )
    assert revised.effective_from_cites.section == "REVISIONS TO THE PRIVACY POLICY"
    assert "effective revision date" in revised.effective_from_cites.quote
    for policy in book:
        for purpose in policy.purposes.values():
            sections = {c.section for c in purpose.cites.every()}
            assert purpose.cites.section == "INFORMATION USE" or purpose.name == "legal_compliance"
            assert ("INTRODUCTION" in sections) == purpose.consent_based, purpose.name
        assert "COOKIES" in {c.section for c in policy.purposes["personalization"].cites.every()}
        assert "COOKIES" in {c.section for c in policy.channels["website"].cites.every()}
        for category in policy.categories.values():
            assert category.cites.section == "INFORMATION COLLECTED"
            assert "minimum amount of information" in category.cites.also[0].quote


def test_the_published_text_beside_the_policy_is_the_seed() -> None:
    seed = REPO_POLICY.parents[1] / "shared" / "seed" / PUBLISHED.name
    if not seed.exists():
        pytest.skip(f"no shared seed at {seed} to compare with")
    assert PUBLISHED.read_bytes() == seed.read_bytes()


def test_contract_vocabulary_and_consent_purposes(book: PolicyBook) -> None:
    policy = book.get("2018-08-01")
    assert len(policy.categories) == 11
    consent = {name for name, purpose in policy.purposes.items() if purpose.consent_based}
    assert consent == {"service_information", "personalization", "contests_promotions_surveys"}
    assert all(policy.purposes[name].granted_by_default for name in consent)
    assert policy.purposes["account_notices"].permits_data_collected_for(["billing"]) == "billing"
    assert policy.purposes["legal_compliance"].permits_data_collected_for(["personalization"])
    for role in ("web_admin", "field_technician", "marketing"):
        assert not policy.roles[role].categories & {"banking", "credit_card", "date_of_birth"}
    assert {"banking", "service_account"} <= policy.roles["billing_clerk"].categories


def test_first_atlantic_commerce_agreement_and_prohibited_online_tendering_card(
    book: PolicyBook,
) -> None:
    policy = book.get("2018-08-01")
    fac = policy.recipients["first_atlantic_commerce"]
    assert fac.categories == {"credit_card", "name", "email", "address"}
    assert fac.purposes == {"transaction_processing"}
    assert fac.agreement.reference
    assert policy.recipients["authorities"].categories == set(policy.categories)
    assert ("online_tendering", "credit_card") in policy.prohibited_collections


def test_vocabulary_spans_all_versions_and_includes_prohibited_purposes(book: PolicyBook) -> None:
    vocabulary = book.vocabulary()
    assert {"sale", "trade", "data_brokerage", "billing"} <= vocabulary.purposes
    assert "sale" not in vocabulary.permitted_purposes
    assert "statement_print_house" in vocabulary.recipients  # only in 2026-01-01
    assert vocabulary.prohibited_collections == {("online_tendering", "credit_card")}
    assert "online_tendering" in vocabulary.channels
    assert "privacy_officer" in vocabulary.roles


@pytest.mark.parametrize(
    ("at", "version"),
    [
        (datetime(2010, 1, 1, tzinfo=UTC), "2018-08-01"),  # before any version: the earliest
        (datetime(2018, 8, 1, tzinfo=UTC), "2018-08-01"),
        (datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), "2018-08-01"),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01"),
        (datetime(2030, 1, 1), "2026-01-01"),  # naive is UTC
    ],
)
def test_in_force_picks_latest_version_not_after_the_instant(
    book: PolicyBook, at: datetime, version: str
) -> None:
    assert book.in_force(at).version == version


def test_retention_rules_of_web_log_and_financial_records(book: PolicyBook) -> None:
    policy = book.get("2018-08-01")
    collected = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
    web_log = policy.retention("web_log")
    assert web_log.period == Duration(days=90)
    assert web_log.expires_at(collected) == datetime(2026, 5, 3, 9, 0, tzinfo=UTC)
    banking = policy.retention("banking")
    assert banking.expires_at(collected) is None
    hold = policy.legal_hold("banking", collected)
    assert hold is not None
    assert hold.until == date(2032, 2, 2)
    assert "financial records" in hold.basis
    assert policy.legal_hold("email", collected) is None
    with pytest.raises(KeyError, match="no category 'nope'"):
        policy.retention("nope")


def test_duration_is_calendar_arithmetic() -> None:
    assert Duration.parse("P1Y6M10D") == Duration(1, 6, 10)
    assert str(Duration(6, 0, 0)) == "P6Y"
    leap_day = datetime(2024, 2, 29, tzinfo=UTC)
    assert Duration(years=1).after(leap_day) == datetime(2025, 2, 28, tzinfo=UTC)
    assert Duration(months=11).after(leap_day) == datetime(2025, 1, 29, tzinfo=UTC)
    for bad in ("90 days", "P", "P1W", "6y"):
        with pytest.raises(ValueError, match="ISO 8601"):
            Duration.parse(bad)


def test_a_later_version_is_just_another_file(tmp_path: Path) -> None:
    text = FIRST.read_text(encoding="utf-8")
    write_policy(tmp_path, "2018-08-01.yaml", text)
    later = text.replace('version: "2018-08-01"', 'version: "2030-06-01"').replace(
        "effective_from: 2018-08-01", "effective_from: 2030-06-01T00:00:00-04:00"
    )
    write_policy(tmp_path, "2030-06-01.yaml", later)
    book = load_policies(tmp_path)
    assert book.in_force(datetime(2030, 6, 1, 3, 59, tzinfo=UTC)).version == "2018-08-01"
    assert book.in_force(datetime(2030, 6, 1, 4, 0, tzinfo=UTC)).version == "2030-06-01"


# --------------------------------------------------------------------------- invalid files


def test_policy_error_is_a_lifecycle_configuration_error(tmp_path: Path) -> None:
    error = load_error(tmp_path)
    assert isinstance(error, LifecycleError)
    assert isinstance(error, ConfigurationError)
    assert "holds no *.yaml policy file" in str(error)


def test_unknown_category_in_a_role_names_file_path_and_reason(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["roles"]["marketing"]["categories"][2] = "bank_details"

    error = load_error(edited(tmp_path, change))
    assert error.file.endswith("policy.yaml")
    assert error.path == "roles.marketing.categories[2]"
    assert "unknown category 'bank_details'" in error.reason
    assert str(error).startswith(f"{tmp_path / 'policy.yaml'}: roles.marketing.categories[2]: ")


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["purposes"]["billing"]["compatible"] = ["service_provision"]

    error = load_error(edited(tmp_path, change))
    assert error.path == "purposes.billing.compatible"
    assert "unknown key 'compatible'" in error.reason


def test_unknown_purpose_in_a_recipient_agreement_is_refused(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["recipients"]["first_atlantic_commerce"]["purposes"] = ["payments"]

    error = load_error(edited(tmp_path, change))
    assert error.path == "recipients.first_atlantic_commerce.purposes[0]"
    assert "unknown purpose 'payments'" in error.reason


def test_bad_effective_from_date_is_refused(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["effective_from"] = "2018-13-01"

    error = load_error(edited(tmp_path, change))
    assert (error.path, error.reason) == (
        "effective_from",
        "'2018-13-01' is not an ISO date such as 2018-08-01",
    )


def test_bad_retention_period_is_refused(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["retention"]["web_log"]["period"] = "90 days"

    error = load_error(edited(tmp_path, change))
    assert error.path == "retention.web_log.period"
    assert "ISO 8601" in error.reason


def test_missing_cites_and_unknown_section_are_refused(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        del document["channels"]["website"]["cites"]
        document["channels"]["email"]["cites"] = {"section": "COOKIE JAR", "quote": "x"}

    error = load_error(edited(tmp_path, change))
    problems = dict(error.problems)
    assert problems["channels.website.cites"] == "is required"
    assert (
        "'COOKIE JAR' is not one of this file's sections"
        in problems["channels.email.cites.section"]
    )
    assert "(2 problems in this file)" in str(error)


def test_duplicate_versions_across_files_are_refused(tmp_path: Path) -> None:
    text = FIRST.read_text(encoding="utf-8")
    write_policy(tmp_path, "a.yaml", text)
    write_policy(
        tmp_path, "b.yaml", text.replace("effective_from: 2018-08-01", "effective_from: 2019-01-01")
    )
    error = load_error(tmp_path)
    assert error.file.endswith("b.yaml")
    assert (error.path, error.reason) == ("version", "version '2018-08-01' is also in a.yaml")


def test_a_key_written_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    text = FIRST.read_text(encoding="utf-8").replace(
        "  marketing:\n", "  marketing:\n    categories: [banking]\n", 1
    )
    write_policy(tmp_path, "policy.yaml", text)
    error = load_error(tmp_path)
    assert error.path.startswith("line ")
    assert "key 'categories' appears twice" in error.reason


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    write_policy(tmp_path, "policy.yaml", "version: '2018-08-01'\ncategories: [name\n")
    error = load_error(tmp_path)
    assert error.path.startswith("line ")
    assert "not valid YAML" in error.reason


def test_granting_marketing_banking_breaks_the_contract(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["roles"]["marketing"]["categories"].append("banking")

    error = load_error(edited(tmp_path, change))
    assert error.path == "roles.marketing.categories"
    assert "the contract forbids marketing to touch 'banking'" in error.reason


def test_renaming_a_contract_category_is_refused(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["categories"]["phone"] = document["categories"].pop("telephone")
        document["retention"]["phone"] = document["retention"].pop("telephone")
        for role in document["roles"].values():
            if isinstance(role["categories"], list) and "telephone" in role["categories"]:
                role["categories"].remove("telephone")
        for purpose in document["purposes"].values():
            if isinstance(purpose["categories"], list) and "telephone" in purpose["categories"]:
                purpose["categories"].remove("telephone")

    error = load_error(edited(tmp_path, change))
    assert error.path == "categories.telephone"
    assert "is required by the contract" in error.reason


def test_a_category_without_retention_is_refused(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        del document["retention"]["documents"]

    error = load_error(edited(tmp_path, change))
    assert (error.path, error.reason) == (
        "retention.documents",
        "every category needs a retention rule",
    )


def test_empty_file_is_refused(tmp_path: Path) -> None:
    write_policy(tmp_path, "policy.yaml", "")
    error = load_error(tmp_path)
    assert (error.path, error.reason) == ("(document)", "the file is empty")


@pytest.mark.broker
def test_lifecycle_up_with_an_invalid_policy_stops_before_creating_keys_or_database(
    tmp_path: Path,
) -> None:
    def change(document: dict[str, Any]) -> None:
        document["roles"]["marketing"]["categories"].append("banking")

    policy_dir = edited(tmp_path / "policy", change)
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
    env.update(
        LIFECYCLE_POLICY_DIR=str(policy_dir),
        LIFECYCLE_DATA_DIR=str(data_dir),
        LIFECYCLE_METRICS_PORT="0",
    )
    result = run_cli(env, "up", timeout=60)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert (
        f"error: {policy_dir / 'policy.yaml'}: roles.marketing.categories: "
        "the contract forbids marketing to touch 'banking'" in stderr
    )
    assert not (data_dir / "master.key").exists()
    assert not (data_dir / "lifecycle.sqlite").exists()
    assert not (data_dir / "ledger-signing.key").exists()


def test_an_empty_list_of_citations_and_a_missing_effective_from_cites_are_refused(
    tmp_path: Path,
) -> None:
    def change(document: dict[str, Any]) -> None:
        document["purposes"]["personalization"]["cites"] = []
        del document["effective_from_cites"]

    error = load_error(edited(tmp_path, change))
    assert error.problems[0] == ("effective_from_cites", "is required")
    uncited = edited(tmp_path, lambda d: d["purposes"]["personalization"].update(cites=[]))
    assert load_error(uncited).problems == (
        ("purposes.personalization.cites", "must name at least one section and quote"),
    )


def test_each_of_several_citations_is_checked(tmp_path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["purposes"]["personalization"]["cites"][1] = {"section": "PREAMBLE", "quote": "x"}

    error = load_error(edited(tmp_path, change))
    assert error.path == "purposes.personalization.cites[1].section"
    assert "'PREAMBLE' is not one of this file's sections" in error.reason
