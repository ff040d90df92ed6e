"""The console's command line, and the command line's reveals on the audit ledger."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
from console.helpers import published_decisions

from fixtures.broker import Workers, run_cli

SUBJECT = "C-313131"
VALUES = {"name": "Keisha Example-Gopaul", "email": "keisha.example@example.org"}


def test_users_are_added_from_stdin_listed_and_removed(lifecycle_env: dict[str, str]) -> None:
    added = run_cli(
        lifecycle_env, "console", "user", "add", "olga", "--role", "privacy_officer",
        stdin=b"a long enough passphrase\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr.decode()
    assert "added olga (privacy_officer)" in added.stderr.decode()
    assert b"passphrase" not in added.stdout + added.stderr
    again = run_cli(
        lifecycle_env, "console", "user", "add", "olga", "--role", "auditor",
        stdin=b"another long passphrase\n",
    )  # fmt: skip
    assert again.returncode != 0 and "user 'olga' exists" in again.stderr.decode()
    short = run_cli(
        lifecycle_env, "console", "user", "add", "ann", "--role", "analyst", stdin=b"short\n"
    )
    assert short.returncode != 0 and "at least 12 characters" in short.stderr.decode()
    wrong_role = run_cli(
        lifecycle_env, "console", "user", "add", "ann", "--role", "billing_clerk", stdin=b"x" * 12
    )
    assert wrong_role.returncode == 2 and "privacy_officer" in wrong_role.stderr.decode()
    listed = run_cli(lifecycle_env, "console", "user", "list")
    assert listed.stdout.decode().split("\t")[:2] == ["olga", "privacy_officer"]
    assert run_cli(lifecycle_env, "console", "user", "remove", "olga").returncode == 0
    missing = run_cli(lifecycle_env, "console", "user", "remove", "olga")
    assert missing.returncode != 0 and "no user 'olga'" in missing.stderr.decode()
    assert run_cli(lifecycle_env, "console", "user", "list").stdout == b""


def collect(subject: str) -> bytes:
    event: dict[str, Any] = {
        "kind": "collected",
        "event_id": f"cli-{subject}",
        "source": "web",
        "subject_id": subject,
        "actor": {"id": "web-portal", "role": "system"},
        "channel": "web_form",
        "purposes": ["billing"],
        "data": VALUES,
    }
    return (json.dumps(event) + "\n").encode()


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_subject_report_and_events_tail_record_their_reveals_before_showing_values(
    lifecycle_env: dict[str, str], broker: str, workers: Workers
) -> None:
    workers.start().wait_for_log("Worker ready", 90)
    assert run_cli(lifecycle_env, "publish", "-", stdin=collect(SUBJECT)).returncode == 0
    hidden = run_cli(lifecycle_env, "subject", "report", SUBJECT, "--json", "--role", "marketing")
    assert hidden.returncode == 0 and VALUES["email"] not in hidden.stdout.decode()
    assert not [r for r in published_decisions(broker) if r["kind"] == "values_revealed"]

    for _ in range(60):  # until the worker has decided the collection
        report = run_cli(lifecycle_env, "subject", "report", SUBJECT, "--json")
        assert report.returncode == 0, report.stderr.decode()
        if json.loads(report.stdout)["held"]:
            break
    held = {h["category"]: h["value"] for h in json.loads(report.stdout)["held"]}
    assert held == VALUES
    reveals = [r for r in published_decisions(broker) if r["kind"] == "values_revealed"]
    assert reveals and reveals[-1]["categories"] == sorted(VALUES)
    assert (reveals[-1]["source"], reveals[-1]["actor_role"]) == ("cli", "privacy_officer")
    assert reveals[-1]["recipient"]  # the operating-system user
    assert not any(v in repr(reveals) for v in [*VALUES.values(), SUBJECT])

    before = len(reveals)
    tail = run_cli(lifecycle_env, "events", "tail", "--decrypt", "--json")
    assert tail.returncode == 0 and VALUES["email"] in tail.stdout.decode()
    reveals = [r for r in published_decisions(broker) if r["kind"] == "values_revealed"]
    assert len(reveals) == before + 1  # one customer, one reveal for the whole run
    assert reveals[-1]["categories"] == sorted([*VALUES, "subject_id"])

    # on the ledger like every decision: export, verify and replay cover the new kinds
    for _ in range(100):
        exported = run_cli(lifecycle_env, "audit", "export", "--kind", "values_revealed")
        lines = [json.loads(line) for line in exported.stdout.splitlines()]
        if len(lines) == len(reveals):
            break
        time.sleep(0.2)
    assert [r["categories"] for r in lines] == [r["categories"] for r in reveals]
    for line in lines:
        stored = line.pop("hash")
        canonical = json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() == stored
    verified = run_cli(lifecycle_env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
    replayed = run_cli(lifecycle_env, "audit", "replay", "--from-beginning")
    assert replayed.returncode == 0, replayed.stderr.decode()
    kinds = [json.loads(line)["kind"] for line in replayed.stdout.splitlines()]
    assert kinds.count("values_revealed") == len(reveals)

    no_bus = {k: v for k, v in lifecycle_env.items() if k != "KAFKA_BOOTSTRAP"}
    refused = run_cli(no_bus, "subject", "report", SUBJECT, "--json")
    assert refused.returncode != 0
    assert "recorded on the audit ledger" in refused.stderr.decode()
    assert VALUES["email"] not in refused.stdout.decode()  # no record, no values
