"""``lifecycle up --demo``: sample billing and outage traffic fed into the running pipeline."""

from __future__ import annotations

import threading
import time

from lifecycle.logging import get_logger
from lifecycle.runtime import Runtime
from lifecycle.traffic import Traffic
from streams.publisher import Publisher

log = get_logger(__name__)


def start_demo(runtime: Runtime, *, every: float = 2.0, burst: int = 50) -> threading.Thread:
    """Publish a burst of traffic every ``every`` seconds, with a refusal and an erasure now
    and then, from a daemon thread."""

    def feed() -> None:
        time.sleep(3)  # let the worker join its group first
        publisher = Publisher(
            runtime.settings.kafka_client_config(),
            runtime.keystore,
            runtime.codec,
            runtime.policy.vocabulary(),
        )
        traffic = Traffic(subjects=500)
        rounds = 0
        while True:
            rounds += 1
            events = list(traffic.events(burst))
            if rounds % 3 == 0:
                events += traffic.violations(rounds % 20)
            if rounds % 5 == 0:
                events.append(traffic.erasure(rounds % 40, f"DEMO-REQ-{rounds}"))
            for event in events:
                publisher.publish(event)
            publisher.flush()
            log.info("demo.published", events=len(events), round=rounds)
            time.sleep(every)

    thread = threading.Thread(target=feed, name="demo-traffic", daemon=True)
    thread.start()
    return thread
