"""Hostile records for ``customer.events``, made from genuine ones, and the scenario that
produces them at a running worker between two halves of genuine traffic."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import Producer
from faults.harness import Stream, fault_seed, settle_and_check, traffic_stream
from faults.invariants import CODEC, Report, read_all, wait_until_settled

from core.db import make_engine
from core.settings import load_settings
from streams.keys import open_keystore
from streams.topics import CUSTOMER_EVENTS

from fixtures.broker import WorkerProcess, Workers, run_cli

PARTITIONS = 4  # of customer.events, as the broker fixture makes them
Genuine = tuple[bytes, bytes, dict[str, Any]]
"""(key, value, decoded) of a genuine record of customer.events."""


@dataclass
class Hostile:
    kind: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    """None: where the contract's partitioner (murmur2 of the key) puts it."""


def fresh_id(rng: random.Random) -> str:
    return f"hostile-{rng.getrandbits(64):016x}"


def flip_bits(rng: random.Random, value: bytes) -> bytes:
    data = bytearray(value)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def another_schema() -> bytes:
    """A valid record of another schema (a Decision), as a misrouted producer would send."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return CODEC.encode(
        "lifecycle.Decision",
        {
            "event_id": "not-an-event",
            "kind": "used",
            "subject_ref": "ab" * 32,
            "source": "x",
            "categories": [],
            "decision": "allow",
            "reason_code": "allowed",
            "rule": "x",
            "policy_version": "x",
            "occurred_at": moment,
            "decided_at": moment,
            "source_partition": 0,
            "source_offset": 0,
        },
    )


def undecodable(rng: random.Random, genuine: list[Genuine], count: int) -> list[Hostile]:
    """Bytes that are not one of our records (and exact copies of genuine ones)."""
    made = [
        Hostile("almost a megabyte", b"k", rng.randbytes(990_000)),
        Hostile("empty value, no key", None, b""),
    ]
    decision = another_schema()
    while len(made) < count:
        key, value, _ = rng.choice(genuine)
        choice = rng.randrange(9)
        if choice == 0:
            junk = rng.randbytes(rng.randint(0, 2_000))
            made.append(Hostile("random bytes", rng.choice([None, b"", rng.randbytes(32)]), junk))
        elif choice == 1:
            made.append(Hostile("bit flips", key, flip_bits(rng, value)))
        elif choice == 2:
            made.append(Hostile("truncated", key, value[: rng.randrange(len(value))]))
        elif choice == 3:
            made.append(Hostile("bytes appended", key, value + rng.randbytes(rng.randint(1, 30))))
        elif choice == 4:
            wrong = value[:2] + rng.randbytes(8) + value[10:]
            made.append(Hostile("unknown fingerprint", key, wrong))
        elif choice == 5:
            made.append(Hostile("another schema", key, decision))
        elif choice == 6:
            made.append(Hostile("no header", key, value[10:]))
        elif choice == 7:
            other = rng.choice(genuine)[0]
            if other != key:
                made.append(Hostile("key is not its subject_ref", rng.choice([None, other]), value))
        else:
            made.append(Hostile("exact copy", key, value))
    return made


def invalid_event(rng: random.Random, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A copy of a decoded ``used`` event, changed so that it decodes but is not valid."""
    event = {**record, "event_id": fresh_id(rng), "actor": dict(record["actor"])}
    body = dict(event["body"])
    choice = rng.randrange(8)
    if choice == 0:
        event["kind"] = rng.choice(["collected", "shared", "deletion_requested", "consent_changed"])
        return f"kind {event['kind']} with a used body", event
    if choice == 1:
        event["event_id"] = ""
        return "empty event_id", event
    if choice == 2:
        event["source"] = ""
        return "empty source", event
    if choice == 3:
        event["actor"]["role"] = rng.choice(["", "root", "Odette Example", "x" * 500])
        body["purpose"] = rng.choice(["", "sale", "exfiltration", "purpose" * 50])
        body["categories"] = rng.choice([[], ["shoe_size"], ["email"] * 3, ["x"] * 1000])
        event["body"] = body
        return "names no policy knows", event
    if choice == 4:
        event["source"] = "s" * 200_000
        return "a 200 KB string", event
    if choice == 5:
        event["occurred_at"] = rng.choice(
            [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)]
        )
        return "the ends of time", event
    if choice == 6:
        subject = dict(event["subject"])
        subject["nonce"] = rng.randbytes(rng.choice([0, 3, 12, 64]))
        subject["ciphertext"] = rng.randbytes(rng.randint(0, 64))
        subject["key_version"] = rng.choice([-1, 0, 2**31 - 1])
        event["subject"] = subject
        return "garbage ciphertext", event
    event["subject_ref"] = rng.choice(["", "not-hex", "ab" * 5000])
    return "a subject_ref of its own", event


def invalid_events(rng: random.Random, genuine: list[Genuine], count: int) -> list[Hostile]:
    made = []
    for _ in range(count):
        key, _, record = rng.choice(genuine)
        if rng.randrange(9) == 0:  # a valid event, on a partition its key does not map to
            event = {**record, "event_id": fresh_id(rng)}
            home = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
            wrong = (home + rng.randint(1, PARTITIONS - 1)) % PARTITIONS
            encoded = CODEC.encode("lifecycle.CustomerEvent", event)
            made.append(Hostile("on another partition than its key's", key, encoded, wrong))
            continue
        kind, event = invalid_event(rng, record)
        encoded = CODEC.encode("lifecycle.CustomerEvent", event)
        made.append(Hostile(kind, event["subject_ref"].encode(), encoded))
    return made


def forged_erasures(
    rng: random.Random, genuine: list[Genuine], targets: list[str]
) -> list[Hostile]:
    """An erasure request for each target subject_ref, each reusing the event_id of another
    customer's event that was already decided (an idempotency-key collision)."""
    by_ref = {record["subject_ref"]: record for _, _, record in genuine}
    targets = [ref for ref in targets if ref in by_ref]
    forged = []
    for ref in targets:
        victim = rng.choice([r for _, _, r in genuine if r["subject_ref"] != ref])
        event = {
            **by_ref[ref],
            "event_id": victim["event_id"],
            "kind": "deletion_requested",
            "actor": {"id": "forger", "role": "privacy_officer"},
            "body": {"request_id": f"FORGED-{rng.getrandbits(32):08x}", "categories": None},
        }
        encoded = CODEC.encode("lifecycle.CustomerEvent", event)
        forged.append(Hostile("forged erasure", ref.encode(), encoded))
    return forged


def produce(bootstrap: str, records: list[Hostile]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.max.bytes": 2_000_000,
            "partitioner": "murmur2_random",  # as the contract's producers do
        }
    )
    failed: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failed.append(str(error))

    for record in records:
        where = {} if record.partition is None else {"partition": record.partition}
        producer.produce(CUSTOMER_EVENTS, record.value, record.key, on_delivery=delivered, **where)
        producer.poll(0)
    assert producer.flush(60) == 0 and failed == [], f"hostile records not delivered: {failed[:3]}"


@dataclass
class Outcome:
    report: Report
    worker: WorkerProcess
    kinds: Counter[str]
    stream: Stream


@dataclass
class Pool:
    """What hostile records are made from."""

    genuine: list[Genuine]
    """every genuine ``used`` event decided so far"""
    sacrificial: list[Genuine]
    """those of customers with no later traffic (changing their state disturbs no check)"""
    targets: list[str]
    """subject_refs of customers with a use decided, later traffic and no erasure request"""


HostileMaker = Callable[[random.Random, Pool], list[Hostile]]


def between_genuine_traffic(
    workers: Workers, env: dict[str, str], bootstrap: str, events: int, make: HostileMaker
) -> Outcome:
    """Genuine traffic, then the hostile records, then more genuine traffic, at one worker;
    the invariant is checked once it settled (copies of decided events are absorbed)."""
    seed = fault_seed()
    rng = random.Random(seed)
    stream = traffic_stream(events, subjects=400, erasures=4, seed=seed)
    half = len(stream.events) // 2
    before, after = stream.events[:half], stream.events[half:]
    worker = workers.start()

    def publish(chosen: list[dict[str, Any]]) -> None:
        document = "".join(json.dumps(e) + "\n" for e in chosen).encode()
        published = run_cli(env, "publish", "-", stdin=document)
        assert published.returncode == 0, published.stderr.decode()[-2000:]

    publish(before)
    wait_until_settled(bootstrap)  # decided before the corpus: copies come after originals
    settings = load_settings(env)
    keystore = open_keystore(make_engine(settings.db_url), settings.master_key_file)
    ref_of = {e["subject_id"]: keystore.subject_ref(e["subject_id"]) for e in stream.events}
    later = {ref_of[e["subject_id"]] for e in after}
    erased = {ref_of[e["subject_id"]] for e in stream.events if e["kind"] == "deletion_requested"}
    genuine = [
        (m.key(), m.value(), record)
        for m in read_all(bootstrap, CUSTOMER_EVENTS).messages
        for record in [CODEC.decode("lifecycle.CustomerEvent", m.value())]
        if record["kind"] == "used"
    ]
    sacrificial = [g for g in genuine if g[2]["subject_ref"] not in later]
    used = {g[2]["subject_ref"] for g in genuine}
    hostile = make(rng, Pool(genuine, sacrificial, sorted(later - erased & used)))
    rng.shuffle(hostile)
    kinds = Counter(record.kind for record in hostile)
    print(f"\n[hostile] seed {seed}: {len(hostile)} records {dict(sorted(kinds.items()))}")

    produce(bootstrap, hostile)
    publish(after)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, f"the worker died:\n{worker.log()[-3000:]}"
        time.sleep(1)
    report = settle_and_check(
        bootstrap,
        env,
        "hostile",
        published=stream.event_ids,
        expected_decisions=stream.expected,
        allow_republished=True,
    )
    return Outcome(report, worker, kinds, stream)
