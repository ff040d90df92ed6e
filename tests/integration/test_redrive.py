"""``lifecycle deadletters list`` and ``redrive`` on the running pipeline.

Another upstream system encodes its events as our publisher does but picks partitions its own
way, so some land away from their subject's partition and are dead-lettered ("record is on
partition 2, its key's is 1"). Once that producer is fixed, an operator sends the dead letters
back: each event is decided exactly once, each redrive is on the ledger (who, which dead
letter, never content), and a second redrive changes nothing. A record that still cannot be
decoded is dead-lettered again with its new error, and is not redriven in a loop.
"""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.settings import load_settings
from lifecycle.runtime import Runtime
from processors.deadletters import REDRIVE_OF
from streams.partitioning import home_partition
from streams.publisher import Publisher
from streams.topics import CUSTOMER_EVENTS, DEAD_LETTERS

from fixtures.broker import Workers, read_topic, run_cli
from integration.scenario import PERSONAL, event, lines

SUBJECT = "C-88001"
STAGING = "foreign.staging"
GARBAGE = f"not an event at all: {PERSONAL['email']}".encode()

COLLECTED = event(
    "collected",
    "r01",
    0,
    "system",
    subject=SUBJECT,
    channel="web_form",
    purposes=["billing", "transaction_processing"],
    data={k: PERSONAL[k] for k in ("name", "banking", "credit_card")},
)
FOREIGN = [
    event(
        "used",
        "r02",
        1,
        "billing_clerk",
        subject=SUBJECT,
        categories=["banking"],
        purpose="billing",
    ),
    event(
        "shared",
        "r03",
        2,
        "billing_clerk",
        subject=SUBJECT,
        categories=["credit_card", "name"],
        recipient="first_atlantic_commerce",
        purpose="transaction_processing",
    ),
]


def encode_like_our_publisher(env: dict[str, str], broker: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of FOREIGN, encrypted and encoded exactly as on customer.events."""
    admin = AdminClient({"bootstrap.servers": broker})
    admin.create_topics([NewTopic(STAGING, num_partitions=1, replication_factor=1)])[
        STAGING
    ].result(30)
    runtime = Runtime(load_settings(env)).open()
    publisher = Publisher(
        runtime.settings.kafka_client_config(),
        runtime.keystore,
        runtime.codec,
        runtime.policy.vocabulary(),
        topic=STAGING,
        credentials=runtime.source_credentials,
    )
    try:
        for record in FOREIGN:
            publisher.publish(record)
        assert publisher.flush(30) == len(FOREIGN)
    finally:
        publisher.close()
    staged = read_topic(broker, STAGING, min_count=len(FOREIGN))
    return [(m.key(), m.value()) for m in staged]


def produce_on_the_wrong_partition(broker: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker})
    for key, value in records:
        producer.produce(CUSTOMER_EVENTS, value, key, partition=(home_partition(key, 4) + 1) % 4)
    producer.produce(CUSTOMER_EVENTS, GARBAGE, b"garbage-key", partition=0)
    assert producer.flush(30) == 0


def ledger(env: dict[str, str]) -> list[dict[str, Any]]:
    result = run_cli(env, "audit", "export")
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.splitlines()]


def ledger_holding(env: dict[str, str], event_ids: set[str], timeout: float = 60) -> list[dict]:
    """The ledger once it holds ``event_ids`` (the workers decide the redriven records)."""
    deadline = time.monotonic() + timeout
    while True:
        records = ledger(env)
        if event_ids <= {r["event_id"] for r in records} or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def events_on_the_bus(broker: str) -> int:
    return len(read_topic(broker, CUSTOMER_EVENTS))


def headers_of(message: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in message.headers() or []}


def test_dead_letters_of_a_fixed_fault_are_decided_exactly_once_after_redrive(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    worker = workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines([COLLECTED])).returncode == 0
    produce_on_the_wrong_partition(broker, encode_like_our_publisher(lifecycle_env, broker))

    letters = read_topic(broker, DEAD_LETTERS, min_count=3, timeout=60)
    errors = sorted(headers_of(m)["lifecycle.error"] for m in letters)
    assert sum("its key's is" in error for error in errors) == 2, errors
    assert any("not an Avro single-object record" in error for error in errors), errors
    assert [r["event_id"] for r in ledger(lifecycle_env)] == ["r01"]

    listed = run_cli(lifecycle_env, "deadletters", "list")
    assert listed.returncode == 0, listed.stderr.decode()
    assert listed.stdout.decode().count("waiting") == 3
    assert PERSONAL["email"].encode() not in listed.stdout + listed.stderr

    dry = run_cli(lifecycle_env, "deadletters", "redrive", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr.decode()
    assert dry.stdout.decode().count("would redrive") == 3
    before = events_on_the_bus(broker)

    redriven = run_cli(lifecycle_env, "deadletters", "redrive", "--all", "--by", "ops-alice")
    assert redriven.returncode == 0, redriven.stderr.decode()
    assert "redriven 3, skipped 0" in redriven.stderr.decode()
    assert events_on_the_bus(broker) == before + 3

    records = ledger_holding(lifecycle_env, {"r02", "r03"})
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_event.setdefault(record["event_id"], []).append(record)
    decided = {e: [(r["decision"], r["reason_code"]) for r in rs] for e, rs in by_event.items()}
    assert decided["r02"] == [("allow", "allowed")]
    assert decided["r03"] == [("allow", "allowed")]
    redrives = [r for r in records if r["kind"] == "dead_letter_redriven"]
    assert len(redrives) == 3
    originals = {m.offset(): headers_of(m) for m in letters}
    for record in redrives:
        offset = int(record["event_id"].rsplit("/", 1)[1])
        assert record["event_id"] == f"redrive/{DEAD_LETTERS}/0/{offset}"
        assert record["source_offset"] == int(originals[offset]["lifecycle.source.offset"])
        assert "by operator ops-alice" in record["rule"]
    assert PERSONAL["email"] not in json.dumps(records)

    # the undecodable record is dead-lettered again, marked as a redrive's, with its new error
    again = read_topic(broker, DEAD_LETTERS, min_count=4, timeout=60)
    (renewed,) = [headers_of(m) for m in again if REDRIVE_OF in headers_of(m)]
    garbage_offset = next(o for o, h in originals.items() if "Avro" in h["lifecycle.error"])
    assert renewed[REDRIVE_OF] == f"{DEAD_LETTERS}/0/{garbage_offset}"
    assert "not an Avro single-object record" in renewed["lifecycle.error"]

    # a second redrive changes nothing
    ledger_before, events_before = ledger(lifecycle_env), events_on_the_bus(broker)
    repeat = run_cli(lifecycle_env, "deadletters", "redrive", "--all", "--by", "ops-alice")
    assert repeat.returncode == 0, repeat.stderr.decode()
    out = repeat.stdout.decode()
    assert out.count("already redriven") == 3
    assert out.count("failed again after a redrive") == 1
    assert "redriven 0, skipped 4" in repeat.stderr.decode()
    one = run_cli(lifecycle_env, "deadletters", "redrive", "--offset", str(min(originals)))
    assert "already redriven" in one.stdout.decode()
    assert events_on_the_bus(broker) == events_before
    assert ledger(lifecycle_env) == ledger_before
    assert len(read_topic(broker, DEAD_LETTERS)) == 4

    listed = run_cli(lifecycle_env, "deadletters", "list").stdout.decode()
    assert listed.count("redriven (audit seq") == 3
    assert "failed again after redrive of" in listed
    assert worker.process.poll() is None
