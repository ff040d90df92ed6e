"""The Requests page through its handlers: requests on the policy's clock, filters and CSV,
filing an access request, extending and refusing (as the policy allows), all on the ledger."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from console.helpers import ANALYST, NOW, OFFICER, published_decisions, sign_in
from fastapi.testclient import TestClient

from core.clock import FixedClock
from lifecycle.console.ledger_views import RequestFilter, load_requests
from lifecycle.console.web import Console
from processors.audit_stage import LedgerStage
from processors.requests import Staff, extended, filed, refused
from sinks.ledger import SqlAuditSink, iter_records

pytestmark = pytest.mark.broker

REF_A, REF_B, REF_C = "a1" * 32, "b2" * 32, "c3" * 32
OLGA = Staff(OFFICER, "privacy_officer", "console")


def deletion(request_id: str, ref: str, at: datetime, **erasure: Any) -> dict[str, Any]:
    """The pipeline's decision on an erasure request (as a worker appends it)."""
    return {
        "event_id": f"ev-{request_id}",
        "kind": "deletion_requested",
        "subject_ref": ref,
        "source": "crm",
        "categories": [],
        "purpose": None,
        "purposes": [],
        "consent_granted": None,
        "recipient": None,
        "actor_role": "privacy_officer",
        "decision": "allow",
        "reason_code": "allowed",
        "rule": "RETENTION OF DATA",
        "policy_version": "2026-01-01",
        "occurred_at": at,
        "decided_at": at + timedelta(milliseconds=80),
        "source_partition": 0,
        "source_offset": 7,
        "erasure": {
            "request_id": request_id,
            "status": "completed",
            "shredded": ["email", "name"],
            "retained": [
                {"category": "banking", "basis": "financial records", "until": "2032-02-20"}
            ],
            **erasure,
        },
    }


def seed(console: Console, ledger: SqlAuditSink) -> None:
    """Three requests: an erasure answered at once, an access request received 25 days ago
    (5 days left: "soon"), and one received 29 days ago and extended once (31 days left)."""
    policy = console.runtime.policy.latest
    ledger.append(
        [
            deletion("REQ-ERASED", REF_A, NOW - timedelta(days=3)),
            filed(OLGA, request_id="REQ-SOON", request_kind="access", subject_ref=REF_B,
                  categories=(), policy=policy, at=NOW - timedelta(days=25)),
            filed(OLGA, request_id="REQ-LONG", request_kind="access", subject_ref=REF_C,
                  categories=(), policy=policy, at=NOW - timedelta(days=29)),
            extended(OLGA, request_id="REQ-LONG", request_kind="access", subject_ref=REF_C,
                     number=1, reason="complexity", policy=policy, at=NOW - timedelta(days=2)),
        ]
    )  # fmt: skip


def row_of(page: str, request_id: str) -> str:
    found = re.search(
        rf'<tr class="urgency-([a-z]+)" data-request-id="{request_id}">(.*?)</tr>', page, re.S
    )
    assert found is not None, f"{request_id} is not listed"
    return f"{found.group(1)}|{found.group(2)}"


def test_requests_are_listed_on_the_policys_clock_with_days_left_by_urgency(
    client: TestClient, console: Console, ledger: SqlAuditSink
) -> None:
    seed(console, ledger)
    sign_in(client, ANALYST)
    page = client.get("/requests").text
    assert "3 requests: open ones first" in page
    order = re.findall(r'data-request-id="([^"]+)"', page)
    assert order == ["REQ-SOON", "REQ-LONG", "REQ-ERASED"]  # the soonest due first
    erased = row_of(page, "REQ-ERASED")
    assert erased.startswith("closed|") and "completed" in erased
    assert "retained: banking until 2032-02-20 (financial records)" in erased
    assert "badge" not in erased  # days left hidden once closed
    soon = row_of(page, "REQ-SOON")
    assert soon.startswith("soon|") and "5 days" in soon and "2026-03-07 09:00 UTC" in soon
    long = row_of(page, "REQ-LONG")
    assert long.startswith("ok|") and "31 days" in long and "yes (complexity)" in long
    assert "2026-04-02 09:00 UTC" in long  # 29 days ago + 30 + 30


def test_the_filters_and_the_csv_give_the_same_view(
    client: TestClient, console: Console, ledger: SqlAuditSink
) -> None:
    seed(console, ledger)
    sign_in(client, ANALYST)
    page = client.get("/requests", params={"status": "open", "kind": "access"}).text
    assert "2 requests:" in page and "REQ-ERASED" not in page
    page = client.get("/requests", params={"received_from": "2026-02-02"}).text
    assert "REQ-LONG" not in page and "REQ-SOON" in page  # received 2026-02-01 and 02-05
    page = client.get("/requests", params={"due_to": "2026-03-10"}).text
    assert "1 request:" in page and "REQ-SOON" in page  # REQ-ERASED is due 2026-03-29
    answer = client.get("/requests.csv", params={"status": "open"})
    assert answer.headers["content-disposition"] == 'attachment; filename="requests.csv"'
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert sorted(r["request_id"] for r in rows) == ["REQ-LONG", "REQ-SOON"]
    long = next(r for r in rows if r["request_id"] == "REQ-LONG")
    assert (long["days_left"], long["extended"], long["filed_by"]) == ("31", "yes", OFFICER)
    assert long["subject_ref"] == REF_C
    bad = client.get("/requests", params={"due_from": "next week"})
    assert bad.status_code == 400 and "is not a date" in bad.text


def test_an_overdue_request_says_so_and_an_answer_after_its_due_date_is_late(
    client: TestClient, console: Console, ledger: SqlAuditSink, clock: FixedClock
) -> None:
    seed(console, ledger)
    clock.advance(timedelta(days=6))  # REQ-SOON was due a day ago
    views = {v.request_id: v for v in load_requests(console.runtime.engine, console.runtime.policy)}
    assert views["REQ-SOON"].days_left(clock()) == -1
    assert views["REQ-SOON"].urgency(clock()) == "overdue"
    assert RequestFilter(status="open").matches(views["REQ-SOON"])
    sign_in(client, ANALYST)
    assert "overdue by 1 day" in row_of(client.get("/requests").text, "REQ-SOON")
    ledger.append(
        [
            refused(OLGA, request_id="REQ-SOON", request_kind="access", subject_ref=REF_B,
                    ground="excessive", policy=console.runtime.policy.latest, at=clock())
        ]
    )  # fmt: skip
    row = row_of(client.get("/requests").text, "REQ-SOON")
    assert "refused (excessive)" in row and "answered late" in row


def test_an_officer_files_an_access_request_and_extends_it_once_within_the_policy(
    client: TestClient, console: Console, ledger_stage: LedgerStage, clock: FixedClock
) -> None:
    token = sign_in(client, OFFICER)
    filed_answer = client.post(
        "/requests/file",
        data={"customer_id": "C-100077", "kind": "access", "csrf_token": token},
        follow_redirects=False,
    )
    assert filed_answer.status_code == 303
    location = filed_answer.headers["location"]
    assert "C-100077" not in location
    request_id = location.rsplit("/", 1)[1]
    assert console.wait_for_ledger(f"request/{request_id}/filed") is not None
    page = client.get(location).text
    assert 'Due</dt><dd id="due">2026-04-01 09:00 UTC' in page  # received now + 30 days
    assert "C-100077" not in page

    clock.advance(timedelta(days=3))
    token = sign_in(client, OFFICER)  # three days later: a new session
    told = {"reason": "complexity", "customer_told": "yes", "csrf_token": token}
    not_told = client.post(f"{location}/extend", data={**told, "customer_told": ""})
    assert not_told.status_code == 400 and "customer has been told" in not_told.text
    answer = client.post(f"{location}/extend", data=told, follow_redirects=False)
    assert answer.status_code == 303
    page = client.get(location).text
    assert "2026-05-01 09:00 UTC" in page  # moved by the extension
    assert f"1: complexity, by {OFFICER}" in page

    again = client.post(f"{location}/extend", data=told)
    assert again.status_code == 400 and "extended once only" in again.text
    records = [e.decision() for e in iter_records(console.runtime.engine)]
    kinds = [(r["kind"], r["decision"], r["reason_code"]) for r in records]
    assert kinds[:2] == [
        ("request_filed", "allow", "allowed"),
        ("request_extended", "allow", "complexity"),
    ]
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while len(kinds) < 3 and datetime.now(UTC) < deadline:  # the refused one lands too
        kinds = [(r.decision()["kind"], r.decision()["decision"], r.decision()["reason_code"])
                 for r in iter_records(console.runtime.engine)]  # fmt: skip
    assert kinds[2] == ("request_extended", "deny", "extension_not_permitted")


def test_an_extension_after_the_date_the_policy_sets_is_refused_and_recorded(
    client: TestClient, console: Console, ledger: SqlAuditSink, broker: str
) -> None:
    seed(console, ledger)
    token = sign_in(client, OFFICER)
    # REQ-SOON was received 25 days ago: an extension is still possible (30 days)
    # REQ-LONG is already extended; file one received 31 days ago instead
    policy = console.runtime.policy.latest
    ledger.append(
        [
            filed(OLGA, request_id="REQ-LATE", request_kind="access", subject_ref=REF_A,
                  categories=(), policy=policy, at=NOW - timedelta(days=31)),
        ]
    )  # fmt: skip
    answer = client.post(
        "/requests/REQ-LATE/extend",
        data={"reason": "complexity", "customer_told": "yes", "csrf_token": token},
    )
    assert answer.status_code == 400
    assert "an extension must be recorded by 2026-03-01T09:00" in answer.text
    (record,) = published_decisions(broker)
    assert (record["kind"], record["decision"], record["reason_code"]) == (
        "request_extended",
        "deny",
        "extension_not_permitted",
    )
    assert record["subject_ref"] == REF_A and "REQ-LATE" in record["rule"]


def test_an_officer_refuses_a_request_on_a_ground_the_policy_gives(
    client: TestClient, console: Console, ledger: SqlAuditSink, ledger_stage: LedgerStage
) -> None:
    seed(console, ledger)
    token = sign_in(client, OFFICER)
    unknown = client.post(
        "/requests/REQ-SOON/refuse", data={"ground": "tedious", "csrf_token": token}
    )
    assert unknown.status_code == 400 and "not a ground the policy gives" in unknown.text
    answer = client.post(
        "/requests/REQ-SOON/refuse",
        data={"ground": "manifestly_unfounded", "csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    page = client.get("/requests/REQ-SOON").text
    assert 'id="status">refused (manifestly unfounded)' in page
    assert 'id="extend-form"' not in page  # closed: nothing more to do
    closed = client.post(
        "/requests/REQ-SOON/refuse", data={"ground": "excessive", "csrf_token": token}
    )
    assert closed.status_code == 400
