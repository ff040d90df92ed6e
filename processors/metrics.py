"""The pipeline's Prometheus metrics, in a registry of their own (never the global one), so two
instances in one process (tests, several apps) never share a value.

No label carries personal data or a ``subject_ref``: label values come from closed vocabularies
(event kinds, decisions, reason codes, erasure statuses, the contract's topics) or from the
consumer's own assignment (topic names, partition numbers). Any other value is counted under
``other`` instead of refused, so a mistake at a call site can neither crash the pipeline nor put
an identifier into a time series. Counters count processing: a batch the broker redelivers after
a crash is counted again (decisions and ledger records themselves are not duplicated).

The worker's HTTP endpoint and its health live with the application
(:mod:`lifecycle.observability`); this module only defines what is counted.
"""

from __future__ import annotations

import platform
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import Any, Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from core.clock import Clock, SystemClock
from processors.reasons import REASON_CODES
from schemas.kinds import KINDS
from streams.topics import TOPICS

__all__ = [
    "DECISIONS",
    "ERASURE_STATUSES",
    "EVENT_KINDS",
    "OTHER",
    "REASON_CODES",
    "Metrics",
    "Readiness",
]

# --------------------------------------------------------------------------- vocabularies

OTHER: Final = "other"
"""The label value that stands for anything outside a metric's vocabulary."""

EVENT_KINDS: Final = frozenset(KINDS)
DECISIONS: Final = frozenset({"allow", "deny"})
ERASURE_STATUSES: Final = frozenset({"completed", "nothing_held", "refused"})
"""``completed`` and ``nothing_held`` as in ``lifecycle.Erasure``; ``refused``: the request
itself was denied (e.g. it named a category the policy does not know), nothing was erased."""
CONTRACT_TOPICS: Final = frozenset(spec.name for spec in TOPICS)

_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

# Seconds. Erasure: publish -> decision, 10 ms .. 10 s, then a tail for a backlog.
ERASURE_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds. One ledger transaction of up to a few thousand rows, retries included.
LEDGER_APPEND_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

MonotonicClock = Callable[[], float]
"""Seconds on a clock that never goes back (durations)."""
Offsets = Mapping[tuple[str, int], tuple[int | None, int | None]]
"""(topic, partition) -> (committed offset or position, high watermark)."""


class Readiness(Protocol):
    """What the readiness and heartbeat gauges read (the worker's health)."""

    def is_ready(self) -> bool: ...

    def heartbeat_age(self) -> float: ...


def _known(value: object, vocabulary: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in vocabulary else OTHER


def _topic(value: object) -> str:
    return value if isinstance(value, str) and _KAFKA_TOPIC.match(value) else OTHER


def _version() -> str:
    try:
        return metadata.version("lifecycle")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(slots=True)
class _LedgerBatch:
    decisions: int
    oldest_decided_at: datetime | None
    started: float


class Metrics:
    """The pipeline's metrics, in a :class:`CollectorRegistry` of their own (:attr:`registry`).

    Every method is cheap, thread-safe and never raises on an unexpected label value (it is
    counted under ``other``). Pass ``health`` to also export ``lifecycle_ready`` and
    ``lifecycle_heartbeat_age_seconds``.
    """

    def __init__(
        self,
        *,
        health: Readiness | None = None,
        wall_clock: Clock | None = None,
        monotonic: MonotonicClock = time.monotonic,
        process_collector: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._wall: Clock = wall_clock or SystemClock()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._ledger: _LedgerBatch | None = None
        self._lag_series: set[tuple[str, str]] = set()
        # the labelled series of the per-event counters, looked up once: prometheus_client's
        # labels() builds and checks its key on every call, a cost paid per event otherwise
        self._consumed_series: dict[str, Any] = {}
        self._decided_series: dict[tuple[str, str], Any] = {}
        registry = self.registry

        self._events_consumed = Counter(
            "lifecycle_events_consumed",
            "Events decoded from customer.events, by kind (dead letters are counted apart).",
            ["kind"],
            registry=registry,
        )
        self._decisions = Counter(
            "lifecycle_decisions",
            "Decisions taken, by decision and reason code (retention sweeps included).",
            ["decision", "reason_code"],
            registry=registry,
        )
        self._dead_letters = Counter(
            "lifecycle_dead_letters",
            "Records sent to customer.events.dlq, by the topic they were read from.",
            ["source_topic"],
            registry=registry,
        )
        self._erasures = Counter(
            "lifecycle_erasures",
            "Erasure requests decided, by status (completed, nothing_held, refused).",
            ["status"],
            registry=registry,
        )
        self._erasure_latency = Histogram(
            "lifecycle_erasure_latency_seconds",
            "Seconds from an erasure request's published_at to its decision (keys shredded).",
            buckets=ERASURE_LATENCY_BUCKETS,
            registry=registry,
        )
        self._retention_shreds = Counter(
            "lifecycle_retention_shreds",
            "Categories of a subject shredded because their retention period ran out.",
            registry=registry,
        )
        self._ledger_records = Counter(
            "lifecycle_ledger_records_appended",
            "Decisions made durable in the audit ledger (a redelivered one is counted again).",
            registry=registry,
        )
        self._ledger_append_duration = Histogram(
            "lifecycle_ledger_append_duration_seconds",
            "Seconds to make one batch of decisions durable in the ledger, retries included.",
            buckets=LEDGER_APPEND_BUCKETS,
            registry=registry,
        )
        self._ledger_pending = Gauge(
            "lifecycle_ledger_pending_decisions",
            "Decisions the ledger stage has consumed that are not durable yet.",
            registry=registry,
        )
        ledger_lag = Gauge(
            "lifecycle_ledger_lag_seconds",
            "Age of the oldest decision consumed by the ledger stage and not durable yet "
            "(0 when none waits); grows while the database is down.",
            registry=registry,
        )
        ledger_lag.set_function(self._ledger_lag)
        self._consumer_lag_gauge = Gauge(
            "lifecycle_consumer_lag",
            "Records between the committed offset and the high watermark, per assigned "
            "topic partition.",
            ["topic", "partition"],
            registry=registry,
        )
        Info(
            "lifecycle_process", "The lifecycle worker's version and Python.", registry=registry
        ).info({"version": _version(), "python": platform.python_version()})
        if process_collector:
            ProcessCollector(registry=registry)
        if health is not None:
            ready = Gauge(
                "lifecycle_ready",
                "1 while /readyz answers 200 (joined the group, tables recovered).",
                registry=registry,
            )
            ready.set_function(lambda: 1.0 if health.is_ready() else 0.0)
            age = Gauge(
                "lifecycle_heartbeat_age_seconds",
                "Seconds since the event loop's last heartbeat.",
                registry=registry,
            )
            age.set_function(health.heartbeat_age)
        self._zero_known_series()

    def _zero_known_series(self) -> None:
        """Export every expected series at 0 from the start, so rates and alerts see them."""
        for kind in sorted(EVENT_KINDS):
            self._events_consumed.labels(kind=kind)
        self._decisions.labels(decision="allow", reason_code="allowed")
        for reason in sorted(REASON_CODES - {"allowed"}):
            self._decisions.labels(decision="deny", reason_code=reason)
        self._decisions.labels(decision="allow", reason_code="retention_expired")
        for status in sorted(ERASURE_STATUSES):
            self._erasures.labels(status=status)

    # -- intake and decisions -----------------------------------------------------------

    def event_consumed(self, kind: str, count: int = 1) -> None:
        """``count`` events of ``kind`` decoded from ``customer.events``."""
        label = _known(kind, EVENT_KINDS)
        series = self._consumed_series.get(label)
        if series is None:
            series = self._consumed_series[label] = self._events_consumed.labels(kind=label)
        series.inc(count)

    def decided(self, decision: str, reason_code: str) -> None:
        """One decision (``allow``/``deny``) with its contract reason code."""
        labels = (_known(decision, DECISIONS), _known(reason_code, REASON_CODES))
        series = self._decided_series.get(labels)
        if series is None:
            series = self._decided_series[labels] = self._decisions.labels(*labels)
        series.inc()

    def dead_lettered(self, source_topic: str) -> None:
        """One record sent to the dead-letter topic, read from ``source_topic``."""
        self._dead_letters.labels(source_topic=_known(source_topic, CONTRACT_TOPICS)).inc()

    def erasure_decided(
        self, status: str, published_at: datetime | None, decided_at: datetime | None = None
    ) -> None:
        """An erasure request decided: counted by ``status``; its latency (``published_at`` to
        ``decided_at``, default now) observed unless ``published_at`` is unknown. A publisher
        clock ahead of ours counts as 0 s rather than a negative latency."""
        self._erasures.labels(status=_known(status, ERASURE_STATUSES)).inc()
        if published_at is None:
            return
        seconds = ((decided_at or self._wall()) - published_at).total_seconds()
        self._erasure_latency.observe(max(seconds, 0.0))

    def retention_shredded(self, categories: int) -> None:
        """A retention sweep shredded ``categories`` categories of one subject."""
        if categories > 0:
            self._retention_shreds.inc(categories)

    # -- ledger -------------------------------------------------------------------------

    def ledger_batch_started(
        self, decisions: int, oldest_decided_at: datetime | None = None
    ) -> None:
        """The ledger stage took ``decisions`` decisions (the oldest decided at
        ``oldest_decided_at``) and is making them durable. One batch at a time: a second call
        before :meth:`ledger_batch_durable` adds to the batch in flight."""
        now = self._monotonic()
        with self._lock:
            batch = self._ledger
            if batch is None:
                self._ledger = _LedgerBatch(decisions, oldest_decided_at, now)
            else:
                batch.decisions += decisions
                if oldest_decided_at is not None and (
                    batch.oldest_decided_at is None or oldest_decided_at < batch.oldest_decided_at
                ):
                    batch.oldest_decided_at = oldest_decided_at
            pending = self._ledger.decisions if self._ledger else 0
        self._ledger_pending.set(pending)

    def ledger_batch_durable(self, records: int) -> None:
        """The batch in flight is durable: ``records`` ledger records appended (or found
        already held, for a redelivered batch); its duration is observed."""
        now = self._monotonic()
        with self._lock:
            batch, self._ledger = self._ledger, None
        if records > 0:
            self._ledger_records.inc(records)
        if batch is not None:
            self._ledger_append_duration.observe(max(now - batch.started, 0.0))
        self._ledger_pending.set(0)

    def _ledger_lag(self) -> float:
        with self._lock:
            oldest = self._ledger.oldest_decided_at if self._ledger else None
        if oldest is None:
            return 0.0
        return max((self._wall() - oldest).total_seconds(), 0.0)

    # -- consumer -----------------------------------------------------------------------

    def consumer_lag(self, offsets: Offsets) -> None:
        """Replace the consumer-lag series with ``offsets``: (topic, partition) -> (committed
        offset, or the position when nothing is committed yet; high watermark), both in
        Kafka's next-offset convention. Lag is ``high - committed`` (at least 0); a pair with
        an unknown side exports nothing; partitions no longer given (revoked) are removed."""
        current: dict[tuple[str, str], float] = {}
        for (topic, partition), (committed, high) in offsets.items():
            if committed is None or high is None or not isinstance(partition, int) or partition < 0:
                continue
            current[(_topic(topic), str(partition))] = float(max(high - committed, 0))
        with self._lock:
            for labels in self._lag_series - current.keys():
                self._consumer_lag_gauge.remove(*labels)
            for labels, lag in current.items():
                self._consumer_lag_gauge.labels(*labels).set(lag)
            self._lag_series = set(current)

    # -- exposition ---------------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the text format ``accept`` asks for (Prometheus text by default,
        OpenMetrics on request): ``(body, content type)``."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
