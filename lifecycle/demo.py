"""``lifecycle up --demo``: sample billing and outage traffic fed into the running pipeline,
and a short summary of what the pipeline decided, for a person watching the terminal.

The traffic comes from four upstream systems, registered as sources on the demo's first run
(:data:`lifecycle.traffic.TRAFFIC_SOURCES`) with the roles their events name; their secrets are
read back from the registry (the worker holds the master key) and never printed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from core.logging import get_logger
from lifecycle.runtime import Runtime
from lifecycle.traffic import Traffic, traffic_credentials
from processors.metrics import Metrics
from streams.exceptions import ValidationError

log = get_logger(__name__)


class DemoFeed:
    """Publishes a burst of traffic every ``every`` seconds, with refusals and an erasure now
    and then, from a daemon thread, until :meth:`stop`."""

    def __init__(
        self,
        runtime: Runtime,
        every: float,
        burst: int,
        on_erasure: Callable[[str], None] = lambda _request_id: None,
    ) -> None:
        self._runtime, self._every, self._burst = runtime, every, burst
        self._on_erasure = on_erasure
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
        publisher = runtime.publisher(credentials=traffic_credentials(runtime.sources))
        traffic = Traffic(subjects=500)
        rounds = 0
        try:
            while not self._stop.is_set():
                rounds += 1
                events = list(traffic.events(self._burst))
                if rounds % 3 == 0:
                    events += traffic.violations(rounds % 20)
                erasure = f"DEMO-REQ-{rounds}" if rounds % 5 == 0 else None
                if erasure is not None:
                    events.append(traffic.erasure(rounds % 40, erasure))
                if rounds % 7 == 0:  # billing files an erasure it is not registered for
                    stray = traffic.erasure(rounds % 40, f"DEMO-STRAY-{rounds}")
                    events.append({**stray, "source": "billing"})
                for event in events:
                    try:
                        publisher.publish(event)
                    except ValidationError as exc:  # a demo source an operator removed
                        log.warning("demo.not_published", error=str(exc))
                publisher.flush()
                if erasure is not None:
                    self._on_erasure(erasure)
                log.info("demo.published", events=len(events), round=rounds)
                self._stop.wait(self._every)
        finally:
            publisher.close()


def start_demo(
    runtime: Runtime,
    *,
    every: float = 2.0,
    burst: int = 50,
    on_erasure: Callable[[str], None] = lambda _request_id: None,
) -> DemoFeed:
    return DemoFeed(runtime, every, burst, on_erasure)


class DemoSummary:
    """What the pipeline decided, for a person at the terminal: every ``every`` seconds the
    decisions since the last line, by decision and reason; and each erasure confirmed, with
    how long it took from its publication (for requests this process published)."""

    def __init__(self, metrics: Metrics, *, every: float = 10.0, out: TextIO | None = None) -> None:
        self._metrics = metrics
        self._every = every
        self._out = out or sys.stdout
        self._filed: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seen: Counter[tuple[str, str]] = Counter()
        self._thread = threading.Thread(target=self._run, name="demo-summary", daemon=True)
        self._watcher: Any = None

    def watch(self, watcher: Any) -> None:
        """Stop ``watcher`` (what calls :meth:`confirmed`) with this summary."""
        self._watcher = watcher

    def start(self) -> DemoSummary:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._watcher is not None:
            self._watcher.stop()

    def filed(self, request_id: str) -> None:
        """An erasure request was published now (its confirmation's latency counts from here)."""
        with self._lock:
            self._filed[request_id] = time.monotonic()

    def confirmed(self, confirmation: dict[str, Any]) -> None:
        """An erasure confirmation arrived."""
        request_id = str(confirmation["request_id"])
        with self._lock:
            began = self._filed.pop(request_id, None)
        took = "" if began is None else f" in {time.monotonic() - began:.2f} s"
        erased = ", ".join(confirmation["shredded_categories"]) or "nothing"
        retained = "; ".join(
            f"{r['category']} until {r['until']}" for r in confirmation["retained_categories"]
        )
        self._line(
            f"erasure {request_id} {str(confirmation['status']).replace('_', ' ')}{took}: "
            f"erased {erased}" + (f"; retained {retained}" if retained else "")
        )

    def _counts(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for metric in self._metrics.registry.collect():
            if metric.name != "lifecycle_decisions":
                continue
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["decision"], sample.labels["reason_code"])
                    counts[key] = int(sample.value)
        return counts

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            now = self._counts()
            new = now - self._seen
            self._seen = now
            if not new:
                continue
            allowed = sum(n for (decision, _), n in new.items() if decision == "allow")
            denied = Counter(
                {reason: n for (decision, reason), n in new.items() if decision == "deny"}
            )
            reasons = ", ".join(f"{reason} {n}" for reason, n in denied.most_common())
            self._line(
                f"last {self._every:.0f} s: {allowed + sum(denied.values())} decisions: "
                f"{allowed} allowed; {sum(denied.values())} denied"
                + (f" ({reasons})" if reasons else "")
            )

    def _line(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        with self._lock:
            print(f"{stamp}  {text}", file=self._out, flush=True)


def start_demo_with_summary(runtime: Runtime, metrics: Metrics) -> tuple[DemoFeed, DemoSummary]:
    """The demo traffic, and its summary on standard output (``lifecycle up --demo``)."""
    from lifecycle.console.bus import ConfirmationWatcher

    summary = DemoSummary(metrics)
    bootstrap = runtime.settings.kafka_bootstrap
    print(
        "lifecycle demo: sample billing and outage traffic every 2 s, an erasure every 10 s;\n"
        f"  the bus: {bootstrap} (in another shell: export KAFKA_BOOTSTRAP={bootstrap})\n"
        "  decisions are summarised every 10 s; Ctrl-C stops",
        flush=True,
    )
    summary.watch(
        ConfirmationWatcher(
            runtime.settings.kafka_consumer_config(), runtime.codec, summary.confirmed
        )
    )
    feed = start_demo(runtime, on_erasure=summary.filed)
    return feed, summary.start()
