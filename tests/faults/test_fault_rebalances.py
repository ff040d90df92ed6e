"""Fault 2: workers join and leave the consumer group while a long stream is processed.

A second and a third worker join mid-stream (partitions and their table state move to them),
then leave again (SIGTERM: a clean leave, so partitions move back); under soak the cycle
repeats. Every move is a rebalance during which batches are in flight.
"""

from __future__ import annotations

import random
import signal
import time

import pytest
from faults.harness import (
    Feeder,
    fault_seed,
    scaled,
    settle_and_check,
    traffic_stream,
)

from fixtures.broker import Workers

EVENTS = scaled(15_000, 120_000)
CYCLES = scaled(1, 4)
ERASURES = scaled(12, 60)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_workers_joining_and_leaving_mid_stream_lose_and_duplicate_nothing(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    seed = fault_seed()
    rng = random.Random(seed)
    print(f"\n[rebalances] seed {seed}: {EVENTS} events, {CYCLES} join/leave cycles")
    stream = traffic_stream(EVENTS, erasures=ERASURES, seed=seed)
    feeder = Feeder(lifecycle_env, stream.chunks(scaled(8, 30)), pause=1.0)

    first = workers.start()
    feeder.start()
    moves = []
    for _cycle in range(CYCLES):
        time.sleep(rng.uniform(1.0, 4.0))
        second = workers.start()
        moves.append("second joins")
        time.sleep(rng.uniform(2.0, 6.0))
        third = workers.start()
        moves.append("third joins")
        time.sleep(rng.uniform(4.0, 8.0))
        leaving = [second, third]
        rng.shuffle(leaving)
        for worker in leaving:
            worker.wait_for_log('"metrics.listening"', 120)  # started (a loaded host is slow)
            assert worker.stop(signal.SIGTERM) == 0, f"unclean leave:\n{worker.log()[-3000:]}"
            moves.append(f"worker {workers.started.index(worker)} leaves")
            time.sleep(rng.uniform(1.0, 4.0))
    print(f"[rebalances] moves: {moves}")
    feeder.finish()

    report = settle_and_check(
        broker,
        lifecycle_env,
        "rebalances",
        published=stream.event_ids,
        expected_decisions=stream.expected,
    )
    assert first.process.poll() is None, f"the first worker exited:\n{first.log()[-3000:]}"
    report.assert_holds()
    assert report.decided == len(stream.events)
    assert report.confirmations == ERASURES
