"""Master-key rotation while the pipeline runs, step by step as ``deploy/README.md`` tells an
operator: new key, workers rolled onto both keys, ``lifecycle keys rotate``, then the old key
retired. Nothing stops deciding, values collected under the old key stay readable, and a
process left with only the old key is refused."""

from __future__ import annotations

import json
from pathlib import Path

from core.settings import load_settings
from streams.codec import SingleObjectCodec

from fixtures.broker import Workers, audit_records, run_cli
from integration.scenario import PERSONAL, event, lines

SUBJECT = "C-50001"


def test_rotating_the_master_key_under_running_workers_loses_nothing(
    workers: Workers, lifecycle_env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    codec = SingleObjectCodec()
    # the key store the fixture made (its registered sources included) is under the old key
    old, new = load_settings(lifecycle_env).master_key_file, tmp_path / "new.key"
    on_old = {**lifecycle_env, "LIFECYCLE_MASTER_KEY_FILE": str(old)}
    on_both = {**on_old, "LIFECYCLE_MASTER_KEY_FILE": str(new)}
    on_both["LIFECYCLE_PREVIOUS_MASTER_KEY_FILE"] = str(old)
    on_new = {**lifecycle_env, "LIFECYCLE_MASTER_KEY_FILE": str(new)}

    first = workers.start(**on_old)
    collected = event(
        "collected",
        "rot-1",
        0,
        "system",
        subject=SUBJECT,
        channel="web_form",
        purposes=["billing"],
        data={"name": PERSONAL["name"], "email": PERSONAL["email"]},
    )
    assert run_cli(on_old, "publish", "-", stdin=lines([collected])).returncode == 0
    audit_records(broker, codec, 1)

    made = run_cli(lifecycle_env, "keys", "new-master-key", str(new))
    assert made.returncode == 0, made.stderr.decode()
    assert new.stat().st_mode & 0o777 == 0o600

    second = workers.start(**on_both)  # rolled: the new worker holds both keys
    first.process.terminate()
    assert first.process.wait(60) == 0
    rotated = run_cli(on_both, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr.decode()
    assert "re-wrapped 0 keys" not in rotated.stderr.decode()
    again = run_cli(on_both, "keys", "rotate")
    assert again.returncode == 0, again.stderr.decode()
    assert "re-wrapped 0 keys" in again.stderr.decode()  # nothing left under the old key

    use = event("used", "rot-2", 1, "billing_clerk", subject=SUBJECT, categories=["email"])
    use["purpose"] = "billing"
    assert run_cli(on_new, "publish", "-", stdin=lines([use])).returncode == 0
    records = audit_records(broker, codec, 2)
    assert [(r["decision"]["event_id"], r["decision"]["decision"]) for r in records] == [
        ("rot-1", "allow"),
        ("rot-2", "allow"),
    ]
    assert second.process.poll() is None

    report = run_cli(on_new, "subject", "report", SUBJECT, "--json")
    assert report.returncode == 0, report.stderr.decode()
    held = {h["category"]: h["value"] for h in json.loads(report.stdout)["held"]}
    assert held == {"name": PERSONAL["name"], "email": PERSONAL["email"]}

    stale = run_cli(on_old, "subject", "report", SUBJECT, "--json")
    assert stale.returncode != 0
    assert "master key" in stale.stderr.decode()
    assert PERSONAL["email"] not in (stale.stdout + stale.stderr).decode()
