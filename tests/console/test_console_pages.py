"""The Customer, Violations, Dead letters and Audit pages through their handlers: what each
shows, to whom, and that no personal data reaches a page, URL or download unless a privacy
officer asked for it (and the reveal is on the ledger)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import timedelta
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from console.helpers import ANALYST, AUDITOR, NOW, OFFICER, published_decisions, sign_in
from fastapi.testclient import TestClient

from lifecycle.console.web import Console
from processors.deadletters import dead_letter
from sinks.ledger import SqlAuditSink, iter_records
from streams.topics import DEAD_LETTERS

from fixtures.broker import Workers

pytestmark = pytest.mark.broker

CUSTOMER = "C-424242"
VALUES = {
    "name": "Imani Example-Baptiste",
    "email": "imani.example@example.org",
    "address": "5 Sample Road, Arima",
}


def decision(n: int, **fields: Any) -> dict[str, Any]:
    at = NOW - timedelta(hours=n)
    base: dict[str, Any] = {
        "event_id": f"ev-{n}",
        "kind": "used",
        "subject_ref": hashlib.sha256(f"s{n % 3}".encode()).hexdigest(),
        "source": "crm",
        "categories": ["email"],
        "purpose": "sale",
        "purposes": [],
        "consent_granted": None,
        "recipient": None,
        "actor_role": "marketing",
        "decision": "deny",
        "reason_code": "purpose_not_permitted",
        "rule": "prohibited_purposes.sale",
        "policy_version": "2026-01-01",
        "occurred_at": at,
        "decided_at": at,
        "source_partition": 0,
        "source_offset": n,
        "erasure": None,
    }
    base.update(fields)
    return base


def test_violations_are_grouped_by_reason_role_source_recipient_and_rule_with_a_chart(
    client: TestClient, ledger: SqlAuditSink
) -> None:
    ledger.append(
        [decision(n) for n in range(1, 6)]
        + [
            decision(n, kind="shared", recipient="data_brokers_inc", rule="recipients",
                     reason_code="recipient_not_trusted", purpose="billing",
                     actor_role="billing_clerk", source="billing")
            for n in range(6, 8)
        ]
        + [decision(8, decision="allow", reason_code="allowed", purpose="billing")]
        + [decision(24 * 9, rule="old")]  # outside the default week
    )  # fmt: skip
    sign_in(client, AUDITOR)
    page = client.get("/violations").text
    assert 'id="violations-total">7 refusals' in page
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", page)
    assert rows == [
        ("purpose not permitted", "marketing", "crm", ""),
        ("recipient not trusted", "billing_clerk", "billing", "data_brokers_inc"),
    ]
    chart = json.loads(re.search(r'id="violations-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert chart["step"] == "day"
    assert sum(chart["series"]["purpose_not_permitted"]) == 5
    assert sum(chart["series"]["recipient_not_trusted"]) == 2
    link = re.search(r'<a href="(/audit/records\?[^"]+recipient=data_brokers_inc[^"]*)">', page)
    assert link is not None
    records = client.get(link.group(1).replace("&amp;", "&")).text
    assert 'id="records-total">2 records match' in records
    hourly = client.get(
        "/violations", params={"since": "2026-03-02T00:00", "until": "2026-03-02T09:30"}
    )
    chart = json.loads(
        re.search(r'id="violations-data">(.*?)</script>', hourly.text, re.S).group(1)
    )  # type: ignore[union-attr]
    assert chart["step"] == "hour" and sum(sum(s) for s in chart["series"].values()) == 7


def test_dead_letters_show_where_why_and_when_never_the_content(
    client: TestClient, console: Console, broker: str
) -> None:
    secret = b'{"subject_id": "C-777", "data": {"email": "hidden.person@example.org"}}'
    letter = dead_letter(
        console.runtime.keystore,
        topic="customer.events",
        partition=2,
        offset=41,
        key=b"C-777",
        value=secret,
        error="DecodeError: not Avro single-object encoding",
    )
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(DEAD_LETTERS, letter.value, headers=letter.headers)
    assert producer.flush(10) == 0
    sign_in(client, ANALYST)
    page = client.get("/deadletters").text
    assert 'id="dead-letters-total">1 dead letter' in page
    assert "customer.events / 2 / 41" in page
    assert "DecodeError: not Avro single-object encoding" in page
    assert hashlib.sha256(secret).hexdigest()[:12] in page
    assert "hidden.person" not in page and "C-777" not in page


def test_the_audit_page_shows_the_head_and_checkpoint_and_runs_verify(
    client: TestClient, ledger: SqlAuditSink
) -> None:
    ledger.append([decision(n, decision="allow", reason_code="allowed") for n in range(1, 40)])
    checkpoint = ledger.checkpoint()
    assert checkpoint is not None
    seq, head = ledger.head()
    token = sign_in(client, AUDITOR)
    page = client.get("/audit").text
    assert f"record {seq}" in page and head in page
    assert f"record {checkpoint.seq}" in page
    started = client.post("/audit/verify", data={"csrf_token": token})
    assert started.status_code == 200
    deadline = time.monotonic() + 30
    shown = started.text
    while "verify-result" not in shown and time.monotonic() < deadline:
        time.sleep(0.2)
        shown = client.get("/audit/verify").text
    assert "Intact: 39 records, 1 signed checkpoints verified" in shown
    chart = json.loads(re.search(r'id="decisions-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert sum(chart["series"]["allow"]) == 39


def test_the_exports_are_the_ledger_as_audit_export_writes_it_and_rehash(
    client: TestClient, ledger: SqlAuditSink
) -> None:
    ledger.append([decision(n) for n in range(1, 11)])
    sign_in(client, ANALYST)
    lines = client.get("/audit/export", params={"format": "jsonl"}).text.splitlines()
    assert len(lines) == 10
    for line in lines:
        record = json.loads(line)
        stored = record.pop("hash")
        encoded = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(encoded.encode()).hexdigest() == stored
    table = client.get("/audit/export", params={"format": "csv"}).text.splitlines()
    assert table[0].startswith("seq,event_id,kind,subject_ref,decision") and len(table) == 11
    recent = client.get("/audit/export", params={"since": "2026-03-02T04:30"}).text.splitlines()
    assert len(recent) == 4  # hours 1..4 before NOW


def test_pages_load_scripts_and_styles_from_the_package_only(client: TestClient) -> None:
    sign_in(client, ANALYST)
    page = client.get("/audit").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/") for s in sources), sources
    for asset in (
        "/static/vendor/htmx.min.js",
        "/static/vendor/uPlot.iife.min.js",
        "/static/vendor/uPlot.min.css",
        "/static/console.js",
        "/static/console.css",
    ):
        answer = client.get(asset)
        assert answer.status_code == 200 and len(answer.content) > 500, asset
    assert b"htmx" in client.get("/static/vendor/htmx.min.js").content


@pytest.mark.timeout(240)
def test_the_customer_page_shows_categories_until_an_officer_reveals_and_records_it(
    client: TestClient,
    console: Console,
    workers: Workers,
    broker: str,
    ledger_stage: object,
) -> None:
    workers.start().wait_for_log("Worker ready", 90)
    runtime = console.runtime
    publisher = runtime.publisher()  # signed with the test sources' secrets
    publisher.publish(
        {
            "kind": "collected",
            "source": "web",
            "subject_id": CUSTOMER,
            "actor": {"id": "web-portal", "role": "system"},
            "channel": "web_form",
            "purposes": ["billing", "service_provision"],
            "data": VALUES,
        }
    )
    publisher.close()
    ref = runtime.keystore.subject_ref(CUSTOMER)
    deadline = time.monotonic() + 60
    while not list(iter_records(runtime.engine, subject_ref=ref)):
        assert time.monotonic() < deadline, "the collection was not decided"
        time.sleep(0.3)

    token = sign_in(client, ANALYST)
    page = client.post("/customer", data={"customer_id": CUSTOMER, "csrf_token": token})
    assert page.status_code == 200 and page.url.path == "/customer"
    assert ref[:16] in page.text and 'id="categories-only"' in page.text
    assert 'id="reveal-form"' not in page.text
    assert not any(v in page.text for v in [*VALUES.values(), CUSTOMER])
    for form in ("html", "json"):
        download = client.post(
            "/customer/report", data={"subject_ref": ref, "format": form, "csrf_token": token}
        )
        assert download.status_code == 200
        assert not any(v in download.text for v in [*VALUES.values(), CUSTOMER]), form
    hidden = orjson.loads(
        client.post(
            "/customer/report", data={"subject_ref": ref, "format": "json", "csrf_token": token}
        ).content
    )
    assert {h["category"] for h in hidden["held"]} == set(VALUES)  # categories, no values

    token = sign_in(client, OFFICER)
    page = client.post("/customer", data={"customer_id": CUSTOMER, "csrf_token": token})
    assert 'id="reveal-form"' in page.text
    assert not any(v in page.text for v in [*VALUES.values(), CUSTOMER])  # not yet
    revealed = client.post(
        "/customer/reveal",
        data={"subject_ref": ref, "categories": ["email", "name"], "csrf_token": token},
    )
    assert VALUES["email"] in revealed.text and VALUES["name"] in revealed.text
    assert VALUES["address"] not in revealed.text  # not asked for
    seq = int(
        re.search(
            r'id="reveal-recorded">.*?ledger record <a href="/audit/records/(\d+)"',
            revealed.text,
            re.S,
        ).group(1)
    )  # type: ignore[union-attr]
    (record,) = [e.decision() for e in iter_records(runtime.engine) if e.seq == seq]
    assert (record["kind"], record["recipient"], record["actor_role"], record["categories"]) == (
        "values_revealed", OFFICER, "privacy_officer", ["email", "name"],
    )  # fmt: skip
    assert record["subject_ref"] == ref
    assert not any(v in repr(record) for v in [*VALUES.values(), CUSTOMER])

    download = client.post(
        "/customer/report",
        data={"subject_ref": ref, "format": "json", "values": "yes", "csrf_token": token},
    )
    held = {h["category"]: h["value"] for h in orjson.loads(download.content)["held"]}
    assert held == VALUES
    reveals = [r for r in published_decisions(broker) if r["kind"] == "values_revealed"]
    assert len(reveals) == 2 and reveals[-1]["categories"] == sorted(VALUES)
