"""erase: an erasure request published (as ``lifecycle erase --wait`` does: the real publisher,
delivery confirmed) until its confirmation is read from ``privacy.deletion-confirmations``,
while background traffic flows through the same worker at 2,000 events/s. The worker is the
whole pipeline (``build_worker``: intake, decisions and shredding, ledger, confirmations); the
traffic comes from another process through the real publisher. Requests go one at a time, a
little apart, each for a customer whose data was collected.

Baseline: a bus round trip under the same load, in the same run, alternating with the
requests: one record produced (all acks) and read back by a waiting consumer.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.base import Row, Scale, Target
from bench.decide import settled
from bench.environment import (
    BenchEnv,
    Child,
    children,
    create_topic,
    percentile,
    raw_producer,
)
from lifecycle.runtime import Runtime
from lifecycle.traffic import Traffic
from streams.publisher import Publisher
from streams.topics import CONFIRMATIONS

NAME = "erase"
ECHO_TOPIC = "bench.echo"
BUDGET = 90.0  # seconds of requests at most (a saturated worker answers slowly)
MIN_REQUESTS = 3
CUSTOMERS_FROM = 500_000  # erased customers' indexes: apart from the background traffic's


def run(env: BenchEnv, scale: Scale) -> list[Row]:
    requests = scale.pick(60, 4)
    rate = scale.pick(2_000, 300)
    data = env.folder(NAME)
    erased, echoes = [], []
    with env.broker(NAME) as bootstrap, children() as started:
        settings = env.settings(bootstrap, data)
        runtime = Runtime(settings).open()  # keys and database exist before any helper starts
        publisher = Publisher(
            settings.kafka_client_config(),
            runtime.keystore,
            runtime.codec,
            runtime.policy.vocabulary(),
            listen_for_revocations=False,
        )
        customers = Traffic(1, seed=5)
        indexes = [CUSTOMERS_FROM + n for n in range(requests)]
        publisher.publish_lines([orjson.dumps(_own_id(customers.collected(i))) for i in indexes])
        create_topic(bootstrap, ECHO_TOPIC, 1)
        process_env = env.process_env(bootstrap, data)
        logs = env.folder("logs")
        started.append(Child(["worker", "--mode", "pipeline"], process_env, logs / "erase-0.log"))
        started[0].wait_for(lambda _lines: settled(started), 120, "erase: worker ready")
        load = Child(["traffic", "--rate", str(rate)], process_env, logs / "erase-traffic.log")
        started.append(load)
        load.wait_for(lambda lines: "STARTED" in lines, 60, "erase: traffic started")
        time.sleep(3)  # the worker now carries the load
        confirmations = _reader(bootstrap, CONFIRMATIONS)
        echo_reader = _reader(bootstrap, ECHO_TOPIC)
        echo = raw_producer(bootstrap)
        rng = random.Random(3)
        echo.produce(ECHO_TOPIC, b"warm-up")  # connections up before anything is timed
        echo.flush(30)
        _wait(echo_reader, lambda value: value == b"warm-up")
        cpu_before, wall_before = started[0].cpu_seconds(), time.monotonic()
        try:
            deadline = time.monotonic() + BUDGET
            for index in indexes:
                if time.monotonic() > deadline and len(erased) >= MIN_REQUESTS:
                    break
                token = uuid.uuid4().hex.encode()
                began = time.perf_counter()
                echo.produce(ECHO_TOPIC, token)
                echo.flush(30)
                _wait(echo_reader, lambda value, token=token: value == token)
                echoes.append(time.perf_counter() - began)
                request_id = f"BENCH-{uuid.uuid4()}"
                wanted = request_id.encode()
                began = time.perf_counter()
                publisher.publish(_own_id(customers.erasure(index, request_id)))
                publisher.flush()
                _wait(confirmations, lambda value, wanted=wanted: wanted in value)
                erased.append(time.perf_counter() - began)
                time.sleep(rng.uniform(0.05, 0.25))
            load_cpu = (started[0].cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
        finally:
            confirmations.close()
            echo_reader.close()
            publisher.close()
    notes = {"requests": len(erased), "traffic_events_per_s": rate, "worker_cpu_share": load_cpu}
    return [
        Row(
            NAME,
            f"request -> confirmation, p50, under {rate:,} events/s",
            "ms",
            percentile(erased, 0.5) * 1000,
            percentile(echoes, 0.5) * 1000,
            "bus round trip (produce, all acks, consume), p50",
            Target("at_most", 200),
            notes,
        ),
        Row(
            NAME,
            f"request -> confirmation, p99, under {rate:,} events/s",
            "ms",
            percentile(erased, 0.99) * 1000,
            percentile(echoes, 0.99) * 1000,
            "bus round trip (produce, all acks, consume), p99",
            Target("at_most", 1_000),
            {**notes, "max_ms": max(erased) * 1000},
        ),
    ]


def _own_id(event: dict[str, Any]) -> dict[str, Any]:
    """The event with an id of its own (another Traffic numbers its events alike, and the
    pipeline treats a known event_id as a redelivery)."""
    return {**event, "event_id": f"bench-{uuid.uuid4()}"}


def _reader(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return consumer


def _wait(consumer: Consumer, found: Callable[[bytes], bool], timeout: float = 60.0) -> None:
    """Read until a record whose value satisfies ``found`` arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is not None and message.error() is None and found(message.value() or b""):
            return
    raise RuntimeError(f"no awaited record within {timeout:.0f}s")
