"""Metrics, liveness and readiness of a worker process, served over HTTP.

Three parts, each usable alone:

- :class:`Metrics`: the pipeline's Prometheus metrics in a registry of their own (never the
  global one), so two instances in one process (tests, several apps) never share a value.
- :class:`Health`: a heartbeat the worker's event loop ticks (:meth:`Health.attach` or
  :meth:`Health.beat` from a timer) and a readiness flag the worker flips once it has joined
  its consumer group and recovered its tables.
- :func:`start_metrics_server`: ``GET /metrics``, ``/healthz`` and ``/readyz`` from a daemon
  thread, on ``LIFECYCLE_METRICS_HOST`` (default ``0.0.0.0``) and ``LIFECYCLE_METRICS_PORT``
  (default 9108; ``0`` picks a free port, read back from :attr:`MetricsServer.port`).

No label carries personal data or a ``subject_ref``: label values come from closed vocabularies
(event kinds, decisions, reason codes, erasure statuses, the contract's topics) or from the
consumer's own assignment (topic names, partition numbers). Any other value is counted under
``other`` instead of refused, so a mistake at a call site can neither crash the pipeline nor put
an identifier into a time series. Counters count processing: a batch the broker redelivers after
a crash is counted again (decisions and ledger records themselves are not duplicated).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from lifecycle.errors import ConfigurationError
from lifecycle.logging import get_logger
from processors.rules import REASON_CODES
from streams.events import KINDS
from streams.topics import TOPICS

log = get_logger(__name__)

__all__ = [
    "DECISIONS",
    "DEFAULT_METRICS_HOST",
    "DEFAULT_METRICS_PORT",
    "ERASURE_STATUSES",
    "EVENT_KINDS",
    "OTHER",
    "REASON_CODES",
    "Health",
    "Metrics",
    "MetricsServer",
    "start_metrics_server",
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
DEAD_LETTER_SOURCES: Final = ("customer.events", "privacy.decisions")
"""The topics whose records a stage dead-letters (the intake's and the ledger stage's)."""

_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_READY_REASON = re.compile(r"^[A-Za-z0-9 _.,:;()/'-]{0,160}$")

# Seconds. Erasure: publish -> decision, 10 ms .. 10 s, then a tail for a backlog.
ERASURE_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds. One ledger transaction of up to a few thousand rows, retries included.
LEDGER_APPEND_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

DEFAULT_METRICS_HOST: Final = "0.0.0.0"  # noqa: S104  (a container's probes and scrapes)
DEFAULT_METRICS_PORT: Final = 9108

WallClock = Callable[[], datetime]
"""Now, timezone-aware (ledger lag is measured against the decisions' ``decided_at``)."""
MonotonicClock = Callable[[], float]
"""Seconds on a clock that never goes back (durations, heartbeat age)."""
Offsets = Mapping[tuple[str, int], tuple[int | None, int | None]]
"""(topic, partition) -> (committed offset or position, high watermark)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _known(value: object, vocabulary: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in vocabulary else OTHER


def _topic(value: object) -> str:
    return value if isinstance(value, str) and _KAFKA_TOPIC.match(value) else OTHER


def _version() -> str:
    try:
        return metadata.version("lifecycle")
    except metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- health


class Health:
    """Liveness (the event loop answers) and readiness (the worker can do its work).

    Live while the last heartbeat is at most ``stale_after`` seconds old. Before the first
    heartbeat (the process is still starting: opening the database, creating topics) it is live
    for ``start_grace`` seconds from creation. Ready once :meth:`set_ready` said so, and only
    while live. Thread-safe: the HTTP thread reads what the event loop writes.
    """

    __slots__ = (
        "_clock",
        "_created",
        "_last_beat",
        "_lock",
        "_ready",
        "_reason",
        "_ticking",
        "stale_after",
        "start_grace",
    )

    def __init__(
        self,
        *,
        stale_after: float = 15.0,
        start_grace: float = 120.0,
        clock: MonotonicClock = time.monotonic,
    ) -> None:
        if stale_after <= 0 or start_grace <= 0:
            raise ValueError("stale_after and start_grace must be positive seconds")
        self.stale_after = stale_after
        self.start_grace = start_grace
        self._clock = clock
        self._lock = threading.Lock()
        self._created = clock()
        self._last_beat: float | None = None
        self._ready = False
        self._reason = "starting: not yet joined the consumer group"
        self._ticking = 0  # generation of the heartbeat attached to a loop; 0: none

    def beat(self) -> None:
        """Record that the event loop is answering (call it from the loop, e.g. every second)."""
        now = self._clock()
        with self._lock:
            self._last_beat = now

    def attach(self, loop: asyncio.AbstractEventLoop, interval: float = 1.0) -> None:
        """Beat every ``interval`` seconds from ``loop``, from the moment it runs, until
        :meth:`detach`. Safe to call from any thread, before the loop runs; replaces an earlier
        attachment. Unlike a Faust timer, this also beats while tables recover."""
        if interval <= 0 or interval >= self.stale_after:
            raise ValueError("interval must be positive and shorter than stale_after")
        with self._lock:
            self._ticking += 1
            generation = self._ticking

        def tick() -> None:
            with self._lock:
                if self._ticking != generation:
                    return
            self.beat()
            loop.call_later(interval, tick)

        loop.call_soon_threadsafe(tick)

    def detach(self) -> None:
        """Stop the heartbeat started by :meth:`attach` (its next tick does nothing)."""
        with self._lock:
            self._ticking += 1

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Ready or not; ``reason`` (shown by ``/readyz`` while not ready) is a fixed phrase
        such as ``"rebalancing"``, never an exception message or an identifier."""
        if not _READY_REASON.match(reason):
            raise ValueError("reason: a short plain phrase (letters, digits, punctuation)")
        with self._lock:
            self._ready = ready
            self._reason = "" if ready else (reason or "not ready")

    def heartbeat_age(self) -> float:
        """Seconds since the last heartbeat (since creation before the first one)."""
        now = self._clock()
        with self._lock:
            last = self._created if self._last_beat is None else self._last_beat
        return max(now - last, 0.0)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """``(live, body)`` for ``/healthz``."""
        now = self._clock()
        with self._lock:
            started = self._last_beat is not None
            last = self._last_beat if self._last_beat is not None else self._created
        age = max(now - last, 0.0)
        limit = self.stale_after if started else self.start_grace
        live = age <= limit
        body: dict[str, Any] = {
            "status": ("ok" if started else "starting") if live else "stalled",
            "heartbeat_age_seconds": round(age, 3),
            "limit_seconds": limit,
        }
        return live, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)`` for ``/readyz``: ready only while also live."""
        live, alive = self.liveness()
        with self._lock:
            ready, reason = self._ready, self._reason
        if not live:
            return False, {
                "status": "not_ready",
                "reason": f"event loop not answering: no heartbeat for "
                f"{alive['heartbeat_age_seconds']} s",
            }
        if not ready:
            return False, {"status": "not_ready", "reason": reason}
        return True, {"status": "ready"}

    def is_ready(self) -> bool:
        return self.readiness()[0]


# --------------------------------------------------------------------------- metrics


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
        health: Health | None = None,
        wall_clock: WallClock = _utc_now,
        monotonic: MonotonicClock = time.monotonic,
        process_collector: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._wall = wall_clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._ledger: _LedgerBatch | None = None
        self._lag_series: set[tuple[str, str]] = set()
        # the labelled series of the per-event counters, looked up once: prometheus_client's
        # labels() builds and checks its key on every call (3 % of a decision worker's busy samples)
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
        for topic in DEAD_LETTER_SOURCES:  # else the first dead letter is no increase
            self._dead_letters.labels(source_topic=topic)

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


# --------------------------------------------------------------------------- HTTP server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], metrics: Metrics, health: Health, family: int
    ) -> None:
        self.address_family = family
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback naming the client; one line without details instead.
        log.warning("metrics.request_failed")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10.0
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        server = self.server
        if path == "/metrics":
            body, content_type = server.metrics.render(self.headers.get("Accept", ""))
            self._send(200, body, content_type, head)
        elif path == "/healthz":
            live, status = server.health.liveness()
            self._send_json(200 if live else 503, status, head)
        elif path == "/readyz":
            ready, status = server.health.readiness()
            self._send_json(200 if ready else 503, status, head)
        else:
            self._send_json(404, {"status": "not_found", "paths": _PATHS}, head)

    def _send_json(self, code: int, body: Mapping[str, Any], head: bool) -> None:
        self._send(code, json.dumps(body).encode(), "application/json", head)

    def _send(self, code: int, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def version_string(self) -> str:
        return "lifecycle"  # not the Python version

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a probe every few seconds is not worth a log line."""


_PATHS = ["/metrics", "/healthz", "/readyz"]
_POLL_INTERVAL = 0.05
"""Seconds between the server thread's checks for :meth:`MetricsServer.stop`."""


class MetricsServer:
    """A running endpoint; :meth:`stop` (idempotent) closes its socket."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._stopped = False
        self._lock = threading.Lock()
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to reach it from this host (loopback when bound to all interfaces)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
        log.info("metrics.stopped", port=self.port)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def metrics_address(environ: Mapping[str, str] | None = None) -> tuple[str, int]:
    """``(host, port)`` from ``LIFECYCLE_METRICS_HOST`` and ``LIFECYCLE_METRICS_PORT``."""
    env = os.environ if environ is None else environ
    host = env.get("LIFECYCLE_METRICS_HOST") or DEFAULT_METRICS_HOST
    raw = (env.get("LIFECYCLE_METRICS_PORT") or "").strip()
    if not raw:
        return host, DEFAULT_METRICS_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigurationError(
            f"LIFECYCLE_METRICS_PORT must be 0..65535 (0: any free port), not {raw!r}"
        )
    return host, port


def start_metrics_server(
    metrics: Metrics,
    health: Health,
    *,
    host: str | None = None,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread and return at once.

    ``host``/``port`` default to the environment (:func:`metrics_address`). A port that cannot
    be bound raises :class:`~lifecycle.errors.ConfigurationError` naming it.
    """
    env_host, env_port = metrics_address(environ)
    bind_host = env_host if host is None else host
    bind_port = env_port if port is None else port
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    try:
        server = _Server((bind_host, bind_port), metrics, health, family)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {bind_host}:{bind_port} (LIFECYCLE_METRICS_HOST, "
            f"LIFECYCLE_METRICS_PORT): {exc.strerror or exc}"
        ) from exc
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_INTERVAL},
        name=f"lifecycle-metrics:{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    running = MetricsServer(server, thread)
    log.info("metrics.listening", host=running.host, port=running.port)
    return running
