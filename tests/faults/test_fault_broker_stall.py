"""Fault 3: the broker process is frozen (SIGSTOP) for 10 s, then resumed (SIGCONT), while a
publisher is mid-stream and the workers are processing.

The publisher is one ``lifecycle publish -`` process fed slowly through its stdin, so it has
records queued, in flight and still to read when the broker stops answering; it must deliver
all of them (exit 0) once the broker is back, without the broker holding a record twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from faults.harness import (
    StreamingPublisher,
    fault_seed,
    scaled,
    settle_and_check,
    traffic_stream,
)

from streams.broker import EmbeddedBroker

from fixtures.broker import Workers

EVENTS = scaled(10_000, 60_000)
STALLS = scaled(1, 3)
STALL_SECONDS = 10.0
PIECES = scaled(30, 120)
PAUSE = 0.4


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_frozen_broker_loses_and_duplicates_nothing_and_the_publisher_delivers(
    workers: Workers,
    lifecycle_env: dict[str, str],
    embedded_broker: EmbeddedBroker,
    tmp_path: Path,
) -> None:
    seed = fault_seed()
    print(f"\n[stall] seed {seed}: {EVENTS} events, {STALLS} x {STALL_SECONDS:.0f}s broker freeze")
    stream = traffic_stream(EVENTS, erasures=scaled(6, 30), seed=seed)
    pieces = stream.chunks(PIECES)
    assert embedded_broker.pid is not None
    first, second = workers.start(), workers.start()
    first.wait_for_log("Worker ready", 60)
    publisher = StreamingPublisher(lifecycle_env, tmp_path / "publisher.log")

    def feed() -> None:
        for piece in pieces:
            publisher.write(piece)
            time.sleep(PAUSE)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    stalls = []
    for n in range(STALLS):
        time.sleep(4.0 if n == 0 else 6.0)
        os.kill(embedded_broker.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            time.sleep(STALL_SECONDS)
        finally:
            os.kill(embedded_broker.pid, signal.SIGCONT)
        stalls.append(round(time.monotonic() - stopped, 1))
    writer.join(PIECES * PAUSE + 120)
    assert not writer.is_alive(), "the publisher stopped reading its input"
    code, output = publisher.wait(300)
    print(f"[stall] frozen for {stalls} s; publisher: {output.strip().splitlines()[-1:]}")

    assert code == 0, f"the publisher failed:\n{output[-3000:]}"
    assert f"published {len(stream.events)}, refused 0" in output
    report = settle_and_check(
        embedded_broker.bootstrap,
        lifecycle_env,
        "stall",
        published=stream.event_ids,
        expected_decisions=stream.expected,
    )
    for worker in (first, second):
        assert worker.process.poll() is None, f"a worker exited:\n{worker.log()[-3000:]}"
    report.assert_holds()
    assert report.events == len(stream.events)  # the broker holds each record once
