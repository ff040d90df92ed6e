"""The metrics, health and readiness endpoint, tested by scraping the real HTTP server.

Every test starts its own server on a free loopback port; clocks are injected, so nothing waits
for time to pass.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.errors import ConfigurationError
from lifecycle.observability import (
    DEFAULT_METRICS_PORT,
    Health,
    MetricsServer,
    metrics_address,
    start_metrics_server,
)
from processors.metrics import OTHER, Metrics

CONTRACT_REASON_CODES = {
    "allowed",
    "purpose_not_permitted",
    "purpose_not_declared",
    "role_not_authorized",
    "consent_withdrawn",
    "recipient_not_trusted",
    "prohibited_collection",
    "not_collected",
    "subject_erased",
    "retention_expired",
    "source_unauthenticated",
    "source_not_authorized",
}
ADDED_REASON_CODES = {"value_unreadable"}  # documented in the policy files' reason_codes
CONTRACT_KINDS = {"collected", "used", "shared", "deletion_requested", "consent_changed"}
SUBJECT_REF = "5f" * 32  # what a subject_ref looks like: it must never reach a scrape

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeWallClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def serve() -> Iterator[Callable[..., MetricsServer]]:
    """Start servers on free loopback ports; all stopped at the end of the test."""
    started: list[MetricsServer] = []

    def start(metrics: Metrics, health: Health | None = None) -> MetricsServer:
        server = start_metrics_server(metrics, health or Health(), host="127.0.0.1", port=0)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """``(status, content type, body)`` of a GET, 4xx/5xx included."""
    assert url.startswith("http://")
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def scrape(server: MetricsServer) -> Samples:
    status, content_type, body = get(f"{server.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: number for (sample, labels), number in samples.items() if sample == name}


# --------------------------------------------------------------------------- metrics


def test_scrape_reports_events_decisions_dead_letters_erasures_and_shreds(
    serve: Callable[..., MetricsServer],
) -> None:
    metrics = Metrics()
    server = serve(metrics)
    metrics.event_consumed("collected", 3)
    metrics.event_consumed("used")
    metrics.decided("allow", "allowed")
    metrics.decided("deny", "purpose_not_permitted")
    metrics.decided("deny", "purpose_not_permitted")
    metrics.dead_lettered("customer.events")
    metrics.dead_lettered("privacy.decisions")
    metrics.dead_lettered("customer.events")
    metrics.erasure_decided("completed", T0, T0 + timedelta(milliseconds=40))
    metrics.erasure_decided("refused", None)
    metrics.retention_shredded(2)
    metrics.retention_shredded(0)

    samples = scrape(server)

    assert value(samples, "lifecycle_events_consumed_total", kind="collected") == 3
    assert value(samples, "lifecycle_events_consumed_total", kind="used") == 1
    assert value(samples, "lifecycle_events_consumed_total", kind="shared") == 0
    allowed = value(samples, "lifecycle_decisions_total", decision="allow", reason_code="allowed")
    assert allowed == 1
    denied = value(
        samples, "lifecycle_decisions_total", decision="deny", reason_code="purpose_not_permitted"
    )
    assert denied == 2
    assert value(samples, "lifecycle_dead_letters_total", source_topic="customer.events") == 2
    assert value(samples, "lifecycle_dead_letters_total", source_topic="privacy.decisions") == 1
    assert value(samples, "lifecycle_erasures_total", status="completed") == 1
    assert value(samples, "lifecycle_erasures_total", status="refused") == 1
    assert value(samples, "lifecycle_erasures_total", status="nothing_held") == 0
    assert value(samples, "lifecycle_erasure_latency_seconds_count") == 1  # refused: no time
    assert value(samples, "lifecycle_retention_shreds_total") == 2
    info = series(samples, "lifecycle_process_info")
    assert len(info) == 1
    (labels,) = info
    assert dict(labels).keys() == {"version", "python"}
    assert "process_cpu_seconds_total" in {name for name, _ in samples}


def test_every_reason_code_and_kind_is_exported_at_zero_before_any_traffic(
    serve: Callable[..., MetricsServer],
) -> None:
    samples = scrape(serve(Metrics()))

    kinds = {dict(labels)["kind"] for labels in series(samples, "lifecycle_events_consumed_total")}
    assert kinds == CONTRACT_KINDS
    decisions = series(samples, "lifecycle_decisions_total")
    assert {dict(labels)["reason_code"] for labels in decisions} == (
        CONTRACT_REASON_CODES | ADDED_REASON_CODES
    )
    assert set(decisions.values()) == {0.0}


def test_erasure_latency_runs_from_published_at_to_the_decision(
    serve: Callable[..., MetricsServer],
) -> None:
    metrics = Metrics(wall_clock=FakeWallClock(T0 + timedelta(seconds=3)))
    server = serve(metrics)
    metrics.erasure_decided("completed", T0, T0 + timedelta(milliseconds=20))
    metrics.erasure_decided("nothing_held", T0)  # decided "now": 3 s after publishing
    metrics.erasure_decided("completed", T0 + timedelta(seconds=1), T0)  # publisher clock ahead

    samples = scrape(server)

    histogram = "lifecycle_erasure_latency_seconds"
    assert value(samples, f"{histogram}_count") == 3
    assert value(samples, f"{histogram}_sum") == pytest.approx(3.02)
    assert value(samples, f"{histogram}_bucket", le="0.01") == 1  # the 0 s one
    assert value(samples, f"{histogram}_bucket", le="0.025") == 2
    assert value(samples, f"{histogram}_bucket", le="2.5") == 2
    assert value(samples, f"{histogram}_bucket", le="5.0") == 3
    assert value(samples, f"{histogram}_bucket", le="10.0") == 3
    assert value(samples, "lifecycle_erasures_total", status="completed") == 2


def test_label_values_outside_the_vocabulary_are_counted_as_other_never_exported(
    serve: Callable[..., MetricsServer],
) -> None:
    """Decision: an unknown value is bucketed under ``other`` (a metric call never raises and
    never creates a series named after its argument)."""
    metrics = Metrics()
    server = serve(metrics)
    metrics.event_consumed(SUBJECT_REF)
    metrics.event_consumed("retention_sweep")
    metrics.decided("maybe", SUBJECT_REF)
    metrics.decided("deny", "sold to a broker")
    metrics.dead_lettered(SUBJECT_REF)
    metrics.erasure_decided("C-10042", None)
    metrics.consumer_lag({("customer events; C-10042", 0): (1, 2)})
    metrics.unauthenticated_permitted(SUBJECT_REF)

    status, _, body = get(f"{server.url}/metrics")
    samples = scrape(server)

    assert status == 200
    assert SUBJECT_REF not in body
    assert "C-10042" not in body
    assert "broker" not in body
    assert value(samples, "lifecycle_events_consumed_total", kind=OTHER) == 2
    assert value(samples, "lifecycle_decisions_total", decision=OTHER, reason_code=OTHER) == 1
    assert value(samples, "lifecycle_decisions_total", decision="deny", reason_code=OTHER) == 1
    assert value(samples, "lifecycle_dead_letters_total", source_topic=OTHER) == 1
    assert value(samples, "lifecycle_erasures_total", status=OTHER) == 1
    assert value(samples, "lifecycle_unauthenticated_permitted_total", kind=OTHER) == 1
    assert value(samples, "lifecycle_consumer_lag", topic=OTHER, partition="0") == 1
    allowed = {
        "kind": CONTRACT_KINDS | {"retention_sweep", OTHER},
        "decision": {"allow", "deny", OTHER},
        "reason_code": CONTRACT_REASON_CODES | ADDED_REASON_CODES | {OTHER},
        "source_topic": {"customer.events", "privacy.decisions", OTHER},
        "status": {"completed", "nothing_held", "refused", OTHER},
        "topic": {OTHER},
        "partition": {"0"},
    }
    for (name, labels), _number in samples.items():
        if name.startswith("lifecycle_") and name != "lifecycle_process_info":
            for label, label_value in labels:
                if label == "le":  # histogram buckets
                    continue
                assert label_value in allowed.get(label, set()), (name, label)


def test_consumer_lag_follows_the_assignment_and_drops_revoked_partitions(
    serve: Callable[..., MetricsServer],
) -> None:
    metrics = Metrics()
    server = serve(metrics)
    metrics.consumer_lag(
        {
            ("customer.events", 0): (100, 130),
            ("customer.events", 1): (50, 50),
            ("privacy.decisions", 0): (10, 7),  # high watermark not refreshed yet: lag 0
            ("customer.events", 2): (None, 80),  # nothing committed, no position: unknown
            ("lifecycle-subjects-changelog", 3): (5, 9),
        }
    )

    lag = series(scrape(server), "lifecycle_consumer_lag")

    assert lag == {
        frozenset({("topic", "customer.events"), ("partition", "0")}): 30,
        frozenset({("topic", "customer.events"), ("partition", "1")}): 0,
        frozenset({("topic", "privacy.decisions"), ("partition", "0")}): 0,
        frozenset({("topic", "lifecycle-subjects-changelog"), ("partition", "3")}): 4,
    }

    metrics.consumer_lag({("customer.events", 1): (50, 75)})  # after a rebalance

    assert series(scrape(server), "lifecycle_consumer_lag") == {
        frozenset({("topic", "customer.events"), ("partition", "1")}): 25
    }


def test_ledger_lag_grows_while_a_batch_waits_and_is_zero_once_durable(
    serve: Callable[..., MetricsServer],
) -> None:
    wall, monotonic = FakeWallClock(T0), FakeClock()
    metrics = Metrics(wall_clock=wall, monotonic=monotonic)
    server = serve(metrics)
    idle = scrape(server)
    assert value(idle, "lifecycle_ledger_lag_seconds") == 0
    assert value(idle, "lifecycle_ledger_pending_decisions") == 0

    metrics.ledger_batch_started(250, oldest_decided_at=T0 - timedelta(seconds=2))
    wall.now += timedelta(seconds=5)  # e.g. the database is down and the stage retries
    monotonic.advance(5.0)
    waiting = scrape(server)

    assert value(waiting, "lifecycle_ledger_pending_decisions") == 250
    assert value(waiting, "lifecycle_ledger_lag_seconds") == pytest.approx(7.0)

    monotonic.advance(0.5)
    metrics.ledger_batch_durable(248)  # two were dead-lettered
    durable = scrape(server)

    assert value(durable, "lifecycle_ledger_pending_decisions") == 0
    assert value(durable, "lifecycle_ledger_lag_seconds") == 0
    assert value(durable, "lifecycle_ledger_records_appended_total") == 248
    assert value(durable, "lifecycle_ledger_append_duration_seconds_count") == 1
    assert value(durable, "lifecycle_ledger_append_duration_seconds_sum") == pytest.approx(5.5)
    assert value(durable, "lifecycle_ledger_append_duration_seconds_bucket", le="5.0") == 0
    assert value(durable, "lifecycle_ledger_append_duration_seconds_bucket", le="10.0") == 1


def test_two_servers_in_one_process_do_not_share_metrics(
    serve: Callable[..., MetricsServer],
) -> None:
    first, second = Metrics(), Metrics()
    first_server, second_server = serve(first), serve(second)
    first.decided("deny", "subject_erased")
    first.event_consumed("shared", 5)
    second.event_consumed("shared")

    one, two = scrape(first_server), scrape(second_server)

    assert first_server.port != second_server.port
    erased = {"decision": "deny", "reason_code": "subject_erased"}
    assert value(one, "lifecycle_decisions_total", **erased) == 1
    assert value(two, "lifecycle_decisions_total", **erased) == 0
    assert value(one, "lifecycle_events_consumed_total", kind="shared") == 5
    assert value(two, "lifecycle_events_consumed_total", kind="shared") == 1
    global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "lifecycle_" not in global_text


def test_concurrent_updates_during_scrapes_lose_no_count(
    serve: Callable[..., MetricsServer],
) -> None:
    metrics = Metrics()
    server = serve(metrics)

    def decide_500() -> None:
        for _ in range(500):
            metrics.decided("allow", "allowed")

    threads = [threading.Thread(target=decide_500) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        scrape(server)
    for thread in threads:
        thread.join()

    samples = scrape(server)

    assert value(samples, "lifecycle_decisions_total", decision="allow", reason_code="allowed") == (
        2_000
    )


def test_openmetrics_is_served_when_asked_for(serve: Callable[..., MetricsServer]) -> None:
    metrics = Metrics()
    server = serve(metrics)
    metrics.event_consumed("used")

    status, content_type, body = get(
        f"{server.url}/metrics", accept="application/openmetrics-text; version=1.0.0"
    )

    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert 'lifecycle_events_consumed_total{kind="used"} 1.0' in body


# --------------------------------------------------------------------------- health


def test_healthz_turns_503_when_the_heartbeat_stops(serve: Callable[..., MetricsServer]) -> None:
    clock = FakeClock()
    health = Health(stale_after=10.0, clock=clock)
    server = serve(Metrics(), health)
    health.beat()
    clock.advance(9.5)

    status, content_type, body = get(f"{server.url}/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"status": "ok", "heartbeat_age_seconds": 9.5, "limit_seconds": 10}

    clock.advance(1.0)  # the loop is blocked: no beat for 10.5 s
    status, _, body = get(f"{server.url}/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "stalled"

    health.beat()  # it answers again
    assert get(f"{server.url}/healthz")[0] == 200


def test_healthz_grants_a_start_grace_before_the_first_heartbeat(
    serve: Callable[..., MetricsServer],
) -> None:
    clock = FakeClock()
    health = Health(stale_after=10.0, start_grace=60.0, clock=clock)
    server = serve(Metrics(), health)
    clock.advance(59.0)  # opening the database, creating topics: the loop does not run yet

    status, _, body = get(f"{server.url}/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "starting"

    clock.advance(2.0)
    assert get(f"{server.url}/healthz")[0] == 503


def test_heartbeat_attached_to_an_event_loop_beats_until_detached() -> None:
    clock = FakeClock()
    health = Health(stale_after=10.0, clock=clock)
    loop = asyncio.new_event_loop()
    try:
        health.attach(loop, interval=0.01)  # before the loop runs, as the worker does
        assert health.liveness()[1]["status"] == "starting"
        loop.run_until_complete(asyncio.sleep(0.05))
        assert health.liveness()[1]["status"] == "ok"

        clock.advance(5.0)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert health.heartbeat_age() == 0.0  # beat again at the new time

        health.detach()
        clock.advance(11.0)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert health.liveness() == (
            False,
            {"status": "stalled", "heartbeat_age_seconds": 11.0, "limit_seconds": 10.0},
        )
    finally:
        loop.close()


def test_readyz_is_503_with_its_reason_until_the_worker_is_ready(
    serve: Callable[..., MetricsServer],
) -> None:
    clock = FakeClock()
    health = Health(stale_after=10.0, clock=clock)
    server = serve(Metrics(), health)

    status, content_type, body = get(f"{server.url}/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body) == {
        "status": "not_ready",
        "reason": "starting: not yet joined the consumer group",
    }

    health.beat()
    health.set_ready(True)
    status, _, body = get(f"{server.url}/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready"})

    health.set_ready(False, "rebalancing")
    status, _, body = get(f"{server.url}/readyz")
    assert (status, json.loads(body)["reason"]) == (503, "rebalancing")

    health.set_ready(True)
    clock.advance(30.0)  # ready, but the event loop stopped answering
    status, _, body = get(f"{server.url}/readyz")
    assert status == 503
    assert json.loads(body)["reason"].startswith("event loop not answering")


def test_a_readiness_reason_is_a_plain_phrase() -> None:
    health = Health()
    with pytest.raises(ValueError, match="reason"):
        health.set_ready(False, "failed:\nTraceback (most recent call last)")
    with pytest.raises(ValueError, match="reason"):
        health.set_ready(False, "x" * 500)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="interval"):
            health.attach(loop, interval=60.0)
    finally:
        loop.close()


def test_readiness_and_heartbeat_age_are_metrics_too(serve: Callable[..., MetricsServer]) -> None:
    clock = FakeClock()
    health = Health(clock=clock)
    metrics = Metrics(health=health)
    server = serve(metrics, health)
    health.beat()
    clock.advance(2.5)

    before = scrape(server)
    health.set_ready(True)
    after = scrape(server)

    assert value(before, "lifecycle_ready") == 0
    assert value(after, "lifecycle_ready") == 1
    assert value(after, "lifecycle_heartbeat_age_seconds") == 2.5


# --------------------------------------------------------------------------- the server


def test_port_and_host_come_from_the_environment_and_0_picks_a_free_port() -> None:
    assert metrics_address({}) == ("0.0.0.0", DEFAULT_METRICS_PORT)  # noqa: S104
    assert metrics_address({"LIFECYCLE_METRICS_PORT": "9200"}) == ("0.0.0.0", 9200)  # noqa: S104

    server = start_metrics_server(
        Metrics(),
        Health(),
        environ={"LIFECYCLE_METRICS_PORT": "0", "LIFECYCLE_METRICS_HOST": "127.0.0.1"},
    )
    try:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("port", ["metrics", "-1", "70000"])
def test_a_port_that_is_not_a_port_number_is_a_configuration_error(port: str) -> None:
    with pytest.raises(ConfigurationError, match="LIFECYCLE_METRICS_PORT"):
        metrics_address({"LIFECYCLE_METRICS_PORT": port})


def test_a_port_in_use_is_a_configuration_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
            start_metrics_server(Metrics(), Health(), host="127.0.0.1", port=port)


def test_unknown_paths_are_404_and_stop_closes_the_port(
    serve: Callable[..., MetricsServer],
) -> None:
    server = serve(Metrics())

    status, _, body = get(f"{server.url}/metrics/../secrets")
    assert status == 404
    assert json.loads(body)["paths"] == ["/metrics", "/healthz", "/readyz"]

    server.stop()
    server.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        get(f"{server.url}/healthz")


def test_responses_do_not_advertise_the_python_version(
    serve: Callable[..., MetricsServer],
) -> None:
    server = serve(Metrics())
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:  # noqa: S310
        headers: Any = response.headers
        assert headers["Server"] == "lifecycle"
