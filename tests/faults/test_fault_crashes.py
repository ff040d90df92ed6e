"""Fault 1: the worker is SIGKILLed at random points of a long stream, and restarted.

Kills land wherever the schedule puts them: while the worker starts or recovers its table,
mid-batch, and right after an erasure shredded keys (before its decision reached the ledger).
After the last restart every offset must be accounted for exactly once, every decision must be
the one the policy gives (a restart changes no decision), and every erasure confirmed.
"""

from __future__ import annotations

import random
import time

import pytest
from faults.harness import (
    Feeder,
    fault_seed,
    scaled,
    settle_and_check,
    traffic_stream,
)

from fixtures.broker import WorkerProcess, Workers

EVENTS = scaled(20_000, 120_000)
KILLS = scaled(4, 12)
ERASURES = scaled(12, 60)


def kill_when_logged(worker: WorkerProcess, text: str, timeout: float) -> bool:
    """SIGKILL ``worker`` as soon as it logs ``text`` once more; False when it did not."""
    seen = worker.log().count(text)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.process.poll() is None:
        if worker.log().count(text) > seen:
            break
        time.sleep(0.02)
    else:
        return False
    worker.process.kill()
    return True


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sigkilled_and_restarted_worker_loses_and_duplicates_nothing(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    seed = fault_seed()
    rng = random.Random(seed)
    print(f"\n[crashes] seed {seed}: {EVENTS} events, {ERASURES} erasures, {KILLS} kills")
    stream = traffic_stream(EVENTS, erasures=ERASURES, seed=seed)
    feeder = Feeder(lifecycle_env, stream.chunks(scaled(8, 30)), pause=0.5)

    worker = workers.start()
    feeder.start()
    schedule = []
    for kill in range(KILLS):
        if kill == 1:  # between an erasure's shredding and its ledger record
            point = "after erasure.done"
            if not kill_when_logged(worker, '"event": "erasure.done"', 60):
                point = "erasure.done not logged in time: plain kill"
                worker.process.kill()
        else:
            delay = rng.uniform(0.5, 5.0)
            point = f"{delay:.1f}s after start"
            time.sleep(delay)
            worker.process.kill()
        worker.process.wait(10)
        schedule.append(point)
        time.sleep(rng.uniform(0.0, 1.5))
        worker = workers.start()
    print(f"[crashes] kills: {schedule}")
    feeder.finish()

    report = settle_and_check(
        broker,
        lifecycle_env,
        "crashes",
        published=stream.event_ids,
        expected_decisions=stream.expected,
    )
    assert worker.process.poll() is None, f"the last worker exited:\n{worker.log()[-3000:]}"
    report.assert_holds()
    assert report.events == len(stream.events) and report.decided == len(stream.events)
    assert report.confirmations == ERASURES
