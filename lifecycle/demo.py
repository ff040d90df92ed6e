"""``lifecycle up --demo``: sample billing and outage traffic fed into the running pipeline."""

from __future__ import annotations

import threading

from core.logging import get_logger
from lifecycle.runtime import Runtime
from lifecycle.traffic import Traffic

log = get_logger(__name__)


class DemoFeed:
    """Publishes a burst of traffic every ``every`` seconds, with refusals and an erasure now
    and then, from a daemon thread, until :meth:`stop`."""

    def __init__(self, runtime: Runtime, every: float, burst: int) -> None:
        self._runtime, self._every, self._burst = runtime, every, burst
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _feed(self) -> None:
        if self._stop.wait(3):  # let the worker join its group first
            return
        runtime = self._runtime
        publisher = runtime.publisher()
        traffic = Traffic(subjects=500)
        rounds = 0
        try:
            while not self._stop.is_set():
                rounds += 1
                events = list(traffic.events(self._burst))
                if rounds % 3 == 0:
                    events += traffic.violations(rounds % 20)
                if rounds % 5 == 0:
                    events.append(traffic.erasure(rounds % 40, f"DEMO-REQ-{rounds}"))
                for event in events:
                    publisher.publish(event)
                publisher.flush()
                log.info("demo.published", events=len(events), round=rounds)
                self._stop.wait(self._every)
        finally:
            publisher.close()


def start_demo(runtime: Runtime, *, every: float = 2.0, burst: int = 50) -> DemoFeed:
    return DemoFeed(runtime, every, burst)
