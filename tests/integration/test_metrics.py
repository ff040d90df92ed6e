"""A running worker's metrics, health and readiness, scraped over HTTP."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from lifecycle.worker import LAG_INTERVAL
from streams.broker import free_port
from streams.codec import SingleObjectCodec
from streams.topics import CUSTOMER_EVENTS

from fixtures.broker import Workers, audit_records, run_cli
from integration.test_bus import EXAMPLES


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_worker_reports_decisions_health_and_readiness_over_http(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    port = free_port()
    worker = workers.start(LIFECYCLE_METRICS_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    assert run_cli(lifecycle_env, "publish", str(EXAMPLES)).returncode == 0
    poison = Producer({"bootstrap.servers": broker})
    poison.produce(CUSTOMER_EVENTS, b"not avro", key=b"poison")
    assert poison.flush(10) == 0
    del poison
    audit_records(broker, SingleObjectCodec(), 8)

    deadline = time.monotonic() + 30
    while get(f"{base}/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert get(f"{base}/readyz")[0] == 200
    assert get(f"{base}/healthz")[0] == 200
    # consumer lag is reported every LAG_INTERVAL seconds, once partitions have been fetched
    while True:
        status, text = get(f"{base}/metrics")
        assert status == 200
        found = samples(text)
        if (
            any(
                name == "lifecycle_consumer_lag" and ("topic", CUSTOMER_EVENTS) in labels
                for name, labels in found
            )
            or time.monotonic() > deadline + LAG_INTERVAL * 2
        ):
            break
        time.sleep(1)
    denied = (
        "lifecycle_decisions_total",
        (("decision", "deny"), ("reason_code", "purpose_not_permitted")),
    )
    assert found[denied] >= 1
    assert found[("lifecycle_events_consumed_total", (("kind", "used"),))] >= 3
    assert found[("lifecycle_erasures_total", (("status", "completed"),))] >= 1
    assert found[("lifecycle_ledger_records_appended_total", ())] >= 8
    assert found[("lifecycle_dead_letters_total", (("source_topic", CUSTOMER_EVENTS),))] >= 1
    assert found[("lifecycle_erasure_latency_seconds_count", ())] >= 1
    assert ("lifecycle_ledger_lag_seconds", ()) in found
    lags = {
        labels: value
        for (name, labels), value in found.items()
        if name == "lifecycle_consumer_lag" and ("topic", CUSTOMER_EVENTS) in labels
    }
    assert lags, "no consumer lag series for customer.events"
    assert all(value >= 0 for value in lags.values())
    assert "C-10042" not in text and "jane" not in text.lower()
    assert worker.process.poll() is None
