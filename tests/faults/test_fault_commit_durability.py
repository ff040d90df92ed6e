"""An offset commit never runs ahead of the state its events made.

A worker whose subjects-table changelog records take seconds to be acknowledged is killed
right after its first offset commit. If that commit did not wait for the changelog, the
restarted worker recovers a table without the committed events' collections, never reads
those events again, and refuses every later use of the collected data as ``not_collected``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from streams.codec import SingleObjectCodec

from fixtures.broker import REPO, WorkerProcess, Workers, audit_records, run_cli

SLOW_CHANGELOG_WORKER = Path(__file__).with_name("slow_changelog_worker.py")
CODEC = SingleObjectCodec()
CUSTOMERS = 40


def customer(number: int) -> str:
    return f"C-{81000 + number}"


def collections() -> list[dict[str, object]]:
    return [
        {
            "kind": "collected",
            "event_id": f"col-{n}",
            "occurred_at": "2026-03-02T09:00:00+00:00",
            "source": "billing",
            "subject_id": customer(n),
            "actor": {"id": "billing-run", "role": "system"},
            "channel": "paper_form",
            "purposes": ["billing"],
            "data": {"name": f"Customer {n}", "banking": f"ACCT-{n:04d}"},
        }
        for n in range(CUSTOMERS)
    ]


def uses() -> list[dict[str, object]]:
    return [
        {
            "kind": "used",
            "event_id": f"use-{n}",
            "occurred_at": "2026-03-02T10:00:00+00:00",
            "source": "billing",
            "subject_id": customer(n),
            "actor": {"id": "clerk-1", "role": "billing_clerk"},
            "categories": ["banking"],
            "purpose": "billing",
        }
        for n in range(CUSTOMERS)
    ]


def jsonl(events: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def test_a_worker_killed_right_after_a_commit_keeps_the_committed_events_state(
    workers: Workers, lifecycle_env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    assert run_cli(lifecycle_env, "publish", "-", stdin=jsonl(collections())).returncode == 0
    log_path = tmp_path / "slow-changelog-worker.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(SLOW_CHANGELOG_WORKER)],
            env={**lifecycle_env, "LIFECYCLE_TEST_CHANGELOG_DELAY": "5"},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    slow = WorkerProcess(process, log_path)
    try:
        slow.process.wait(120)
    finally:
        slow.stop(signal.SIGKILL)
    assert "test.killed_after_commit" in slow.log(), slow.log()[-3000:]
    assert slow.process.returncode == -signal.SIGKILL

    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=jsonl(uses())).returncode == 0
    records = audit_records(broker, CODEC, 2 * CUSTOMERS, timeout=120)
    decided = {r["decision"]["event_id"]: r["decision"] for r in records}

    refused = {
        event_id: decision["reason_code"]
        for event_id, decision in decided.items()
        if decision["decision"] != "allow"
    }
    assert refused == {}, f"decisions the policy does not give after the restart: {refused}"
    assert set(decided) == {f"col-{n}" for n in range(CUSTOMERS)} | {
        f"use-{n}" for n in range(CUSTOMERS)
    }
