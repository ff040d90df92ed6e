"""The periodic retention timer, in a real worker on the embedded broker, judging by an injected
clock set months ahead (nothing waits for retention periods to run out)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.clock import FixedClock, SystemClock

from fixtures.broker import REPO, WorkerProcess, audit_records, run_cli
from integration.scenario import PERSONAL, lines
from integration.test_erasure import CODEC, SUBJECT, keystore_of, readable_values

CLOCKED_WORKER = Path(__file__).with_name("clocked_worker.py")


def collection(event_id: str, at: datetime, category: str) -> dict[str, object]:
    return {
        "kind": "collected",
        "event_id": event_id,
        "occurred_at": at.isoformat(),
        "source": "web",
        "subject_id": SUBJECT,
        "actor": {"id": "web-1", "role": "system"},
        "channel": "website",
        "purposes": ["website_administration", "customer_support"],
        "data": {category: PERSONAL[category]},
    }


@pytest.fixture
def clocked_worker(
    lifecycle_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[WorkerProcess]:
    """A worker (``lifecycle up`` but for its clock) whose clock stands at the instant the test
    parametrizes this fixture with, sweeping every second."""
    now: datetime = request.param
    log_path = tmp_path / "clocked-worker.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(CLOCKED_WORKER)],
            env={
                **lifecycle_env,
                "LIFECYCLE_TEST_NOW": now.isoformat(),
                "LIFECYCLE_RETENTION_INTERVAL": "1",
            },
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, log_path)
    yield worker
    worker.stop()


COLLECTED = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
"""Yesterday: a real clock would not find a web log of it expired (its period is 90 days)."""


@pytest.mark.parametrize("clocked_worker", [COLLECTED + timedelta(days=120)], indirect=True)
def test_the_periodic_timer_shreds_expired_web_logs_by_the_injected_clock(
    clocked_worker: WorkerProcess, lifecycle_env: dict[str, str], broker: str
) -> None:
    history = [
        collection("t01", COLLECTED, "web_log"),
        collection("t02", COLLECTED, "email"),
    ]
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(history)).returncode == 0

    records = audit_records(broker, CODEC, 3, timeout=90)

    sweep = records[-1]["decision"]
    assert (sweep["kind"], sweep["reason_code"], sweep["categories"]) == (
        "retention_sweep",
        "retention_expired",
        ["web_log"],
    )
    assert sweep["occurred_at"] == COLLECTED + timedelta(days=120)
    assert sweep["event_id"].startswith("timer-")
    ref = keystore_of(lifecycle_env).subject_ref(SUBJECT)
    readable = readable_values(broker, lifecycle_env, ref)
    assert "web_log" not in readable and readable["email"] == {PERSONAL["email"]}


def test_a_fixed_clock_stands_still_until_set_or_advanced_and_is_always_utc_aware() -> None:
    clock = FixedClock(datetime(2033, 1, 1))
    assert clock() == clock() == datetime(2033, 1, 1, tzinfo=UTC)
    clock.advance(timedelta(days=91))
    assert clock() == datetime(2033, 4, 2, tzinfo=UTC)
    clock.set(datetime(2030, 1, 1, 4, tzinfo=timezone(timedelta(hours=4))))
    assert clock() == datetime(2030, 1, 1, tzinfo=UTC)
    assert SystemClock()().tzinfo is UTC
