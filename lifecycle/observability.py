"""Liveness, readiness and the HTTP endpoint of a worker process.

- :class:`Health`: a heartbeat the worker's event loop ticks (:meth:`Health.attach` or
  :meth:`Health.beat` from a timer) and a readiness flag the worker flips once it has joined
  its consumer group and recovered its tables.
- :func:`start_metrics_server`: ``GET /metrics`` (the :class:`~processors.metrics.Metrics`
  registry), ``/healthz`` and ``/readyz`` from a daemon thread, on ``LIFECYCLE_METRICS_HOST``
  (default ``0.0.0.0``) and ``LIFECYCLE_METRICS_PORT`` (default 9108; ``0`` picks a free port,
  read back from :attr:`MetricsServer.port`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from core.errors import ConfigurationError
from core.logging import get_logger
from processors.metrics import Metrics, MonotonicClock

log = get_logger(__name__)

__all__ = [
    "DEFAULT_METRICS_HOST",
    "DEFAULT_METRICS_PORT",
    "Health",
    "MetricsServer",
    "metrics_address",
    "start_metrics_server",
]

_READY_REASON = re.compile(r"^[A-Za-z0-9 _.,:;()/'-]{0,160}$")

DEFAULT_METRICS_HOST: Final = "0.0.0.0"  # noqa: S104  (a container's probes and scrapes)
DEFAULT_METRICS_PORT: Final = 9108


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
    be bound raises :class:`~core.errors.ConfigurationError` naming it.
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
