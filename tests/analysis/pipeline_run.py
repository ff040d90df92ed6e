"""One run of the real pipeline (embedded broker, a worker process, the command line) whose
ledger the analysts' tests export: six weeks of traffic with every event kind, denials of
several reasons, shares with several recipients, erasures and a retention sweep."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.broker import EmbeddedBroker
from streams.topic_admin import apply_topics

from fixtures.broker import LIFECYCLE, REPO, WorkerProcess, pipeline_env, run_cli

WEEK_ONE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday
SUBJECTS = [f"C-9{n:04d}" for n in range(1, 13)]
ERASED = SUBJECTS[:3]


def _event(kind: str, n: int, subject: str, day: float, role: str, **fields: Any) -> dict:
    event = {
        "kind": kind,
        "event_id": f"an-{n:04d}",
        "source": ("billing", "crm", "web", "outage")[n % 4],
        "subject_id": subject,
        "actor": {"id": f"staff-{n % 5}", "role": role},
        **fields,
    }
    if day >= 0:  # a negative day: now (an erasure request filed during the run)
        event["occurred_at"] = (WEEK_ONE + timedelta(days=day)).isoformat()
    return event


def traffic() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(events over six weeks, erasure requests to file afterwards)."""
    events: list[dict[str, Any]] = []
    n = 0

    def add(kind: str, subject: str, day: float, role: str, **fields: Any) -> None:
        nonlocal n
        n += 1
        events.append(_event(kind, n, subject, day, role, **fields))

    for i, subject in enumerate(SUBJECTS):
        add(
            "collected",
            subject,
            i * 0.5,
            "system",
            channel="web_form",
            purposes=["billing", "account_notices", "transaction_processing", "legal_compliance"],
            data={
                "name": f"Example Person {i}",
                "email": f"person{i}@example.org",
                "address": f"{i + 1} Sample Street",
                "banking": f"ACCT-{i:04d}-EXAMPLE",
                "credit_card": f"5500 0000 0000 {i:04d}",
            },
        )
        add(
            "collected",
            subject,
            i * 0.5 + 0.1,
            "system",
            channel="website",
            purposes=["website_administration"],
            data={"web_log": f"203.0.113.{i} Firefox /outages"},
        )
    for week in range(6):
        for i, subject in enumerate(SUBJECTS):
            day = 7 * week + 1 + (i % 5)
            add("used", subject, day, "billing_clerk", categories=["banking"], purpose="billing")
            if (i + week) % 3 == 0:
                add("used", subject, day + 0.2, "marketing", categories=["email"], purpose="sale")
            if (i + week) % 4 == 1:
                add(
                    "used",
                    subject,
                    day + 0.3,
                    "web_admin",
                    categories=["banking"],
                    purpose="billing",
                )
            if (i + week) % 5 == 2:
                add(
                    "used",
                    subject,
                    day + 0.4,
                    "customer_service",
                    categories=["email"],
                    purpose="personalization",
                )
            recipient, purpose, categories = (
                ("first_atlantic_commerce", "transaction_processing", ["credit_card", "name"]),
                ("authorities", "legal_compliance", ["name", "address"]),
                ("statement_print_house", "billing", ["name", "address"]),
                ("acme_list_brokers", "billing", ["email"]),
            )[(i + week) % 4]
            add(
                "shared",
                subject,
                day + 0.5,
                "billing_clerk",
                categories=categories,
                recipient=recipient,
                purpose=purpose,
            )
        add(
            "consent_changed",
            SUBJECTS[week],
            7 * week + 2,
            "system",
            purpose="service_information",
            granted=week % 2 == 1,
        )
    requests = []
    for subject in ERASED:
        n += 1
        event = _event("deletion_requested", n, subject, -1, "privacy_officer")
        event["request_id"] = f"REQ-AN-{n}"
        requests.append(event)
        n += 1
        requests.append(
            _event(
                "used", n, subject, 40, "billing_clerk", categories=["banking"], purpose="billing"
            )
        )
    return events, requests


@dataclass(frozen=True)
class Run:
    env: dict[str, str]
    tmp: Path
    records: int


def _held(env: dict[str, str]) -> int:
    path = Path(env["LIFECYCLE_DATA_DIR"]) / "lifecycle.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as db:
        try:
            return int(db.execute("SELECT count(*) FROM audit_ledger").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def _wait_for_records(env: dict[str, str], worker: WorkerProcess, count: int) -> None:
    deadline = time.monotonic() + 120
    held = 0
    while time.monotonic() < deadline:
        held = _held(env)
        if held >= count:
            return
        if worker.process.poll() is not None:
            raise AssertionError(f"the worker exited:\n{worker.log()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{held} of {count} records in the ledger:\n{worker.log()[-3000:]}")


def _swept_subjects(worker: WorkerProcess, partitions: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        swept = [
            json.loads(line)
            for line in worker.log().splitlines()
            if '"retention.swept"' in line and '"partition"' in line
        ]
        if len(swept) >= partitions:
            return sum(int(entry["subjects"]) for entry in swept)
        time.sleep(0.5)
    raise AssertionError(f"the retention sweep did not finish:\n{worker.log()[-3000:]}")


def run_pipeline(tmp: Path) -> Run:
    """Run the pipeline over :func:`traffic` with its data in ``tmp``; the finished run."""
    events, requests = traffic()
    with EmbeddedBroker() as broker:
        apply_topics({"bootstrap.servers": broker.bootstrap}, 4)
        env = pipeline_env(broker.bootstrap, tmp / "data")
        log_path = tmp / "worker.log"
        with log_path.open("wb") as out:
            worker = WorkerProcess(
                subprocess.Popen(
                    [LIFECYCLE, "up"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
                ),
                log_path,
            )
        try:
            lines = "".join(json.dumps(e) + "\n" for e in events).encode()
            published = run_cli(env, "publish", "-", stdin=lines)
            assert published.returncode == 0, published.stderr.decode()
            _wait_for_records(env, worker, len(events))
            lines = "".join(json.dumps(e) + "\n" for e in requests).encode()
            assert run_cli(env, "publish", "-", stdin=lines).returncode == 0
            _wait_for_records(env, worker, len(events) + len(requests))
            swept = run_cli(env, "retention", "sweep", "--as-of", "2040-01-01T00:00:00Z")
            assert swept.returncode == 0, swept.stderr.decode()
            total = len(events) + len(requests) + _swept_subjects(worker, 4)
            _wait_for_records(env, worker, total)
        finally:
            worker.stop()
    return Run(env, tmp, total)
