"""erase: an erasure request published (as ``lifecycle erase --wait`` does: the real publisher,
delivery confirmed) until its confirmation is read from ``privacy.deletion-confirmations``,
while background traffic flows through the same worker at 2,000 events/s. The worker is the
whole pipeline (``build_worker``: intake, decisions and shredding, ledger, confirmations); the
traffic comes from another process through the real publisher. Requests go one at a time, a
little apart, each for a customer whose data was collected.

Baseline: a bus round trip under the same load, in the same run, alternating with the
requests: one record produced (all acks) and read back by a waiting consumer.

Beside the latencies, the rows' notes give what the worker decided in the same window
(``privacy.decisions`` grew by so many records a second) and the traffic that actually arrived
(``customer.events``' growth, less the requests). A worker that decides fewer events a second
than arrive (5 % slack) falls behind, and every request then waits behind a backlog that only
grows: that is a measured result, not a failed run. A request not confirmed within
``REQUEST_TIMEOUT`` counts as unanswered, its latency as the timeout (a lower bound, far over
both targets), and no further request is sent. Either way the rows are reported, marked
``saturated`` in their notes and in their figure.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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
    records_written,
)
from lifecycle.runtime import Runtime
from lifecycle.traffic import Traffic
from streams.topics import CONFIRMATIONS, CUSTOMER_EVENTS, DECISIONS

NAME = "erase"
ECHO_TOPIC = "bench.echo"
BUDGET = 90.0  # seconds of requests at most (a saturated worker answers slowly)
MIN_REQUESTS = 3
REQUEST_TIMEOUT = 60.0  # seconds a request may wait for its confirmation; then unanswered
KEEPING_UP = 0.95  # a worker deciding less than this share of the arriving events falls behind
CUSTOMERS_FROM = 500_000  # erased customers' indexes: apart from the background traffic's


@dataclass(frozen=True, slots=True)
class _Reading:
    """Where the worker stood at one moment: records on the topics it reads and writes, and
    the CPU time it has used."""

    at: float  # time.monotonic(), halfway through reading the topics' ends
    decisions: int
    events: int
    cpu: float

    @classmethod
    def take(cls, bootstrap: str, worker: Child) -> _Reading:
        before = time.monotonic()
        written = records_written(bootstrap, DECISIONS, CUSTOMER_EVENTS)
        after = time.monotonic()
        cpu = worker.cpu_seconds()
        return cls((before + after) / 2, written[DECISIONS], written[CUSTOMER_EVENTS], cpu)


def run(env: BenchEnv, scale: Scale) -> list[Row]:
    requests = scale.pick(60, 4)
    rate = scale.pick(2_000, 300)
    data = env.folder(NAME)
    erased: list[float] = []  # seconds from request to confirmation, answered requests
    echoes: list[float] = []
    unanswered = 0
    with env.broker(NAME) as bootstrap, children() as started:
        settings = env.settings(bootstrap, data)
        runtime = Runtime(settings).open()  # keys and database exist before any helper starts
        publisher = runtime.publisher(listen_for_revocations=False)
        customers = Traffic(1, seed=5)
        indexes = [CUSTOMERS_FROM + n for n in range(requests)]
        publisher.publish_lines([orjson.dumps(_own_id(customers.collected(i))) for i in indexes])
        create_topic(bootstrap, ECHO_TOPIC, 1)
        process_env = env.process_env(bootstrap, data)
        logs = env.folder("logs")
        started.append(Child(["worker", "--mode", "pipeline"], process_env, logs / "erase-0.log"))
        worker = started[0]
        worker.wait_for(lambda _lines: settled(started), 120, "erase: worker ready")
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
        _wait(echo_reader, _equal_to(b"warm-up"))
        try:
            first = _Reading.take(bootstrap, worker)
            deadline = time.monotonic() + BUDGET
            for index in indexes:
                if time.monotonic() > deadline and len(erased) >= MIN_REQUESTS:
                    break
                token = uuid.uuid4().hex.encode()
                began = time.perf_counter()
                echo.produce(ECHO_TOPIC, token)
                echo.flush(30)
                _wait(echo_reader, _equal_to(token))
                echoes.append(time.perf_counter() - began)
                request_id = f"BENCH-{uuid.uuid4()}"
                began = time.perf_counter()
                publisher.publish(_own_id(customers.erasure(index, request_id)))
                publisher.flush()
                if not _arrives(confirmations, _containing(request_id.encode()), REQUEST_TIMEOUT):
                    unanswered += 1
                    break  # the worker is behind its load: a further request would wait longer
                erased.append(time.perf_counter() - began)
                time.sleep(rng.uniform(0.05, 0.25))
            last = _Reading.take(bootstrap, worker)  # also when the requests stopped early
        finally:
            confirmations.close()
            echo_reader.close()
            publisher.close()
    seconds = last.at - first.at
    decided = (last.decisions - first.decisions) / seconds
    sent = len(erased) + unanswered
    arrived = (last.events - first.events) / seconds  # one decision is owed for each
    # behind the events that arrived, not the rate asked of the traffic process: on a busy
    # machine that process may fall short of it, and the worker keeps up with what it gets
    saturated = unanswered > 0 or decided < KEEPING_UP * arrived
    latencies = erased + [REQUEST_TIMEOUT] * unanswered  # censored at the timeout
    under = f"under {rate:,} events/s"
    if saturated:
        under += f" (worker saturated at {decided:,.0f} decisions/s"
        under += "; lower bound)" if unanswered else ")"
    notes = {
        "requests": len(erased),
        "unanswered": unanswered,
        "worker_decisions_per_s": round(decided, 1),
        "traffic_events_per_s": rate,
        "traffic_measured_per_s": round(arrived - sent / seconds, 1),
        "worker_cpu_share": (last.cpu - first.cpu) / seconds,
        "saturated": saturated,
    }
    return [
        Row(
            NAME,
            f"request -> confirmation, p{round(share * 100)}, {under}",
            "ms",
            percentile(latencies, share) * 1000,
            percentile(echoes, share) * 1000,
            f"bus round trip (produce, all acks, consume), p{round(share * 100)}",
            Target("at_most", most),
            {**notes, "max_ms": max(latencies) * 1000} if share > 0.5 else notes,
        )
        for share, most in ((0.5, 200), (0.99, 1_000))
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


def _equal_to(wanted: bytes) -> Callable[[bytes], bool]:
    return lambda value: value == wanted


def _containing(wanted: bytes) -> Callable[[bytes], bool]:
    return lambda value: wanted in value


def _arrives(consumer: Consumer, found: Callable[[bytes], bool], timeout: float) -> bool:
    """Read until a record whose value satisfies ``found`` arrives (True) or ``timeout``
    seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is not None and message.error() is None and found(message.value() or b""):
            return True
    return False


def _wait(consumer: Consumer, found: Callable[[bytes], bool], timeout: float = 60.0) -> None:
    """Read until a record whose value satisfies ``found`` arrives; raise after ``timeout``."""
    if not _arrives(consumer, found, timeout):
        raise RuntimeError(f"no awaited record within {timeout:.0f}s")
