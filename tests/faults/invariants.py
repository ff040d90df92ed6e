"""The invariant every fault test checks, read from the bus and the ledger after the fault.

* Every offset of ``customer.events`` is accounted for exactly once: by the ledger record that
  names it (``source_partition``/``source_offset``) or by a dead letter that names it (headers
  ``lifecycle.source.*``). An offset carrying an ``event_id`` already recorded at another
  offset is an idempotent republication (the ledger keeps one record per event): allowed only
  where a test produces such copies on purpose (hostile input), a fault everywhere else.
* The ledger holds one record per ``event_id``, ``seq`` runs 1..N without a gap, every record
  is on ``privacy.audit`` with the same hash (the topic is at-least-once: deduplicated by seq),
  and ``lifecycle audit verify`` exits 0.
* Every erasure decision in the ledger has its confirmation on
  ``privacy.deletion-confirmations`` (request_id, audit_seq), and no confirmation proves
  anything else.
* The workers' group has committed every offset of ``customer.events``, and the ledger
  stage's group every offset of ``privacy.decisions``: nothing is left unprocessed.
* Optionally: every event a test published is on the bus, and every decision is the one the
  policy gives (a fault changes no decision).

Ends of partitions come from fetch responses (``_PARTITION_EOF``), not from ListOffsets: the
embedded broker (tansu 0.6.0) answers ListOffsets(latest) with the base offset of the last
record batch + 1 (5,000 records produced in one batch: it answers 1, the fetch says 5,000).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from sqlalchemy import select

from core.db import make_engine
from core.settings import load_settings
from sinks.ledger import audit_ledger
from streams.codec import SingleObjectCodec
from streams.exceptions import DecodeError
from streams.keys import data_keys
from streams.topics import AUDIT, CONFIRMATIONS, CUSTOMER_EVENTS, DEAD_LETTERS, DECISIONS

from fixtures.broker import run_cli

CODEC = SingleObjectCodec()
GROUP = "lifecycle"
"""The workers' consumer group of ``customer.events`` (the Faust app id)."""
LEDGER_GROUP = f"{GROUP}-ledger"
"""The ledger stage's consumer group of ``privacy.decisions``."""
COMMITTING = {CUSTOMER_EVENTS: GROUP, DECISIONS: LEDGER_GROUP}

Position = tuple[int, int]
"""(partition, offset) of a record of ``customer.events``."""


# --------------------------------------------------------------------------- reading the bus


@dataclass
class TopicContents:
    messages: list[Message]
    ends: dict[int, int]
    """partition -> offset after its last record (from the fetch's high watermark)."""


def read_all(bootstrap: str, topic: str, *, timeout: float = 180.0) -> TopicContents:
    """Every record of ``topic`` from offset 0 to the end of each partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 52_428_800,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return TopicContents([], {})
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        ends: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while len(ends) < len(partitions):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: end of partitions {set(partitions) - set(ends)} not reached "
                    f"within {timeout:.0f}s ({len(messages)} records read)"
                )
            for message in consumer.consume(5_000, 0.5):
                error = message.error()
                if error is None:
                    messages.append(message)
                    ends.pop(message.partition(), None)
                elif error.code() == KafkaError._PARTITION_EOF:
                    ends[message.partition()] = message.offset()
                else:
                    raise AssertionError(f"reading {topic}: {error}")
        return TopicContents(messages, ends)
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The committed offset of each partition (0 when none), by the group that consumes it."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": COMMITTING[topic], "enable.auto.commit": False}
    )
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=20)
        return {tp.partition: max(tp.offset, 0) for tp in found}
    finally:
        consumer.close()


def wait_until_settled(bootstrap: str, timeout: float = 180.0) -> float:
    """Wait until the group has committed the end of ``customer.events`` and then of
    ``privacy.decisions`` (every event decided, every decision in the ledger). Returns the
    seconds waited; on timeout returns anyway (the invariant check then says what is left)."""
    start = time.monotonic()
    deadline = start + timeout
    for topic in (CUSTOMER_EVENTS, DECISIONS):
        ends = read_all(bootstrap, topic).ends
        while time.monotonic() < deadline:
            done = committed_offsets(bootstrap, topic, ends)
            if all(done[p] >= end for p, end in ends.items()):
                break
            time.sleep(1.0)
    return time.monotonic() - start


def headers_of(message: Message) -> dict[str, bytes]:
    return {name: value or b"" for name, value in message.headers() or []}


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """What was found; :meth:`problems` lists every broken promise."""

    events: int = 0
    decided: int = 0
    dead_lettered: int = 0
    republished: int = 0
    allow_republished: bool = False
    missing: list[Position] = field(default_factory=list)
    missing_detail: list[str] = field(default_factory=list)
    duplicated: list[tuple[Position, str]] = field(default_factory=list)
    mismatched: list[tuple[Position, str]] = field(default_factory=list)
    stray: list[tuple[int, Position]] = field(default_factory=list)
    refused_by_ledger: list[Position] = field(default_factory=list)
    dead_letter_redeliveries: int = 0
    ledger_records: int = 0
    ledger_duplicate_event_ids: list[str] = field(default_factory=list)
    ledger_seq_problem: str | None = None
    audit_topic_missing: list[int] = field(default_factory=list)
    audit_topic_differs: list[int] = field(default_factory=list)
    lost_before_bus: list[str] = field(default_factory=list)
    decisions_changed: list[tuple[str, tuple[str, str], tuple[str, str]]] = field(
        default_factory=list
    )
    confirmations: int = 0
    confirmations_missing: list[tuple[str, int]] = field(default_factory=list)
    confirmations_unexpected: list[tuple[str, int]] = field(default_factory=list)
    confirmed_before_shredded: list[tuple[str, str]] = field(default_factory=list)
    uncommitted: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    verify_exit: int | None = None
    verify_output: str = ""

    def problems(self) -> list[str]:
        found: list[str] = []

        def some(items: list[Any]) -> str:
            return f"{len(items)}, e.g. {items[:5]}"

        if self.missing:
            found.append(
                f"offsets neither in the ledger nor dead-lettered: {some(self.missing)}; "
                f"{'; '.join(self.missing_detail[:5])}"
            )
        if self.duplicated:
            found.append(f"offsets accounted for more than once: {some(self.duplicated)}")
        if self.mismatched:
            found.append(f"ledger records naming another event's offset: {some(self.mismatched)}")
        if self.stray:
            found.append(f"ledger records naming no offset of customer.events: {some(self.stray)}")
        if self.refused_by_ledger:
            found.append(
                "events decided but their decision dead-lettered by the ledger (no audit "
                f"record): {some(self.refused_by_ledger)}"
            )
        if self.republished and not self.allow_republished:
            found.append(f"{self.republished} offsets repeat an event_id of another offset")
        if self.ledger_duplicate_event_ids:
            found.append(f"event_ids recorded twice: {some(self.ledger_duplicate_event_ids)}")
        if self.ledger_seq_problem:
            found.append(self.ledger_seq_problem)
        if self.audit_topic_missing:
            found.append(f"ledger seqs not on privacy.audit: {some(self.audit_topic_missing)}")
        if self.audit_topic_differs:
            found.append(f"privacy.audit differs from the ledger: {some(self.audit_topic_differs)}")
        if self.lost_before_bus:
            found.append(f"published events not on customer.events: {some(self.lost_before_bus)}")
        if self.decisions_changed:
            found.append(f"decisions differing from the policy's: {some(self.decisions_changed)}")
        if self.confirmations_missing:
            found.append(f"erasures without a confirmation: {some(self.confirmations_missing)}")
        if self.confirmations_unexpected:
            found.append(
                f"confirmations proving no erasure record: {some(self.confirmations_unexpected)}"
            )
        if self.confirmed_before_shredded:
            found.append(
                "confirmed categories whose keys were not destroyed by the confirmation's "
                f"completed_at: {some(self.confirmed_before_shredded)}"
            )
        for topic, partitions in self.uncommitted.items():
            found.append(f"{topic}: offsets not committed (committed, end): {partitions}")
        if self.verify_exit not in (None, 0):
            found.append(f"`lifecycle audit verify` exit {self.verify_exit}: {self.verify_output}")
        return found

    def summary(self) -> str:
        lost = len(self.missing) + len(self.refused_by_ledger)
        duplicated = len(self.duplicated) + len(self.ledger_duplicate_event_ids)
        return (
            f"{self.events} offsets: {self.decided} decided, {self.dead_lettered} dead-lettered, "
            f"{self.republished} republished; lost {lost}, duplicated {duplicated}; "
            f"ledger {self.ledger_records} records, verify exit {self.verify_exit}; "
            f"{self.confirmations} confirmations; {self.dead_letter_redeliveries} dead letters "
            "redelivered"
        )

    def assert_holds(self) -> None:
        problems = self.problems()
        assert not problems, "invariant broken:\n- " + "\n- ".join(problems)


# --------------------------------------------------------------------------- the check


def ledger_rows(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every ledger record (the columns the invariant needs), in seq order."""
    engine = make_engine(load_settings(dict(env)).db_url)
    columns = [
        audit_ledger.c[name]
        for name in (
            "seq", "event_id", "kind", "subject_ref", "decision", "reason_code",
            "source_partition", "source_offset", "erasure", "hash", "recorded_at",
        )
    ]  # fmt: skip
    try:
        with engine.connect() as conn:
            return [
                dict(row._mapping)
                for row in conn.execute(select(*columns).order_by(audit_ledger.c.seq))
            ]
    finally:
        engine.dispose()


def request_times(events: Iterable[Message]) -> dict[tuple[str, str], list[datetime]]:
    """(subject_ref, request_id) -> when each erasure request with that id was published."""
    found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for message in events:
        try:
            record = CODEC.decode("lifecycle.CustomerEvent", message.value() or b"")
        except DecodeError:  # dead-lettered: never decided, never confirmed
            continue
        request_id = record["body"].get("request_id")  # None: a body of another kind
        if record["kind"] == "deletion_requested" and request_id:
            found[(record["subject_ref"], request_id)].append(record["published_at"])
    return found


def confirmed_before_shredded(
    env: Mapping[str, str],
    confirmations: Iterable[Message],
    requests: Mapping[tuple[str, str], list[datetime]] | None = None,
) -> list[tuple[str, str]]:
    """(request_id, category) of every confirmed shred whose keys (those created before the
    request was published: the keys of values before it; later ones protect values after it)
    were not all destroyed, in the key store, by its ``completed_at``: an erasure confirmed
    before it happened (a database outage must delay the confirmation). Without the request's
    publication time, keys created before the confirmation count."""
    keys: dict[tuple[str, str], list[tuple[datetime, datetime | None]]] = defaultdict(list)
    engine = make_engine(load_settings(dict(env)).db_url)
    try:
        with engine.connect() as conn:
            for ref, category, created, shredded in conn.execute(
                select(
                    data_keys.c.subject_ref,
                    data_keys.c.category,
                    data_keys.c.created_at,
                    data_keys.c.shredded_at,
                )
            ):
                keys[(ref, category)].append((_aware(created), _aware(shredded)))
    finally:
        engine.dispose()
    late = []
    for message in confirmations:
        record = CODEC.decode("lifecycle.DeletionConfirmation", message.value() or b"")
        done = record["completed_at"] + timedelta(milliseconds=1)  # kept to the millisecond
        published = [
            at
            for at in (requests or {}).get((record["subject_ref"], record["request_id"]), [])
            if at <= done
        ]
        before = max(published) + timedelta(milliseconds=1) if published else done
        for category in record["shredded_categories"]:
            versions = keys.get((record["subject_ref"], category), [])
            if not any(created < before for created, _ in versions) or any(
                created < before and (shredded is None or shredded > done)
                for created, shredded in versions
            ):
                late.append((record["request_id"], category))
    return late


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive UTC datetimes, PostgreSQL aware ones."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def check_invariants(
    bootstrap: str,
    env: Mapping[str, str],
    *,
    published: Iterable[str] | None = None,
    expected_decisions: Mapping[str, tuple[str, str]] | None = None,
    allow_republished: bool = False,
    verify: bool = True,
) -> Report:
    """Read ``customer.events``, ``privacy.decisions``, ``privacy.audit``, the dead letters,
    the confirmations and the ledger, and account for every offset (see module docstring).

    ``published``: event_ids the test handed to publishers (each must be on the bus).
    ``expected_decisions``: event_id -> (decision, reason_code) the policy gives without faults.
    """
    report = Report(allow_republished=allow_republished)
    events = read_all(bootstrap, CUSTOMER_EVENTS)
    decisions = read_all(bootstrap, DECISIONS)
    letters = read_all(bootstrap, DEAD_LETTERS)
    audit = read_all(bootstrap, AUDIT)
    confirmations = read_all(bootstrap, CONFIRMATIONS)
    rows = ledger_rows(env)

    # the events, by position
    event_ids: dict[Position, str | None] = {}
    for message in events.messages:
        position = (message.partition(), message.offset())
        try:
            record = CODEC.decode("lifecycle.CustomerEvent", message.value() or b"")
        except DecodeError:
            event_ids[position] = None
            continue
        event_ids[position] = record["event_id"]
    report.events = len(event_ids)
    if published is not None:
        on_bus = set(event_ids.values())
        report.lost_before_bus = sorted(set(published) - on_bus)

    # the ledger
    report.ledger_records = len(rows)
    by_event: dict[str, list[int]] = defaultdict(list)
    at_position: dict[Position, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_event[row["event_id"]].append(row["seq"])
        if row["source_partition"] >= 0:
            at_position[(row["source_partition"], row["source_offset"])].append(row)
    report.ledger_duplicate_event_ids = sorted(e for e, seqs in by_event.items() if len(seqs) > 1)
    seqs = [row["seq"] for row in rows]
    if seqs != list(range(1, len(seqs) + 1)):
        gaps = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
        report.ledger_seq_problem = f"ledger seqs are not 1..{len(seqs)} (absent: {gaps[:10]})"

    # dead letters: of customer.events, and of decisions the ledger refused
    lettered: Counter[Position] = Counter()
    refused: list[Position] = []
    decision_at = {(m.partition(), m.offset()): m for m in decisions.messages}
    for letter in letters.messages:
        headers = headers_of(letter)
        source = headers.get("lifecycle.source.topic", b"").decode()
        position = (
            int(headers.get("lifecycle.source.partition", b"-1")),
            int(headers.get("lifecycle.source.offset", b"-1")),
        )
        assert headers.get("lifecycle.error"), f"dead letter without an error: {headers}"
        if source == CUSTOMER_EVENTS:
            lettered[position] += 1
        elif source == DECISIONS and position in decision_at:
            value = decision_at[position].value() or b""
            decided = CODEC.decode("lifecycle.Decision", value)
            refused.append((decided["source_partition"], decided["source_offset"]))
    report.dead_letter_redeliveries = sum(lettered.values()) - len(lettered)
    report.refused_by_ledger = sorted(set(refused))

    # where each event's decision went on privacy.decisions (to explain a missing one)
    decided_at: dict[Position, list[Position]] = defaultdict(list)
    for message in decisions.messages:
        decided = CODEC.decode("lifecycle.Decision", message.value() or b"")
        source = (decided["source_partition"], decided["source_offset"])
        decided_at[source].append((message.partition(), message.offset()))

    # account for every offset
    for position, event_id in sorted(event_ids.items()):
        recorded = at_position.get(position, [])
        accounts = len(recorded) + (1 if position in lettered else 0)
        if accounts > 1:
            how = f"{len(recorded)} records, {lettered[position]} letters"
            report.duplicated.append((position, how))
        elif recorded:
            report.decided += 1
            if recorded[0]["event_id"] != event_id:
                report.mismatched.append((position, recorded[0]["event_id"]))
        elif position in lettered:
            report.dead_lettered += 1
        elif position in report.refused_by_ledger:
            continue
        elif event_id is not None and event_id in by_event:
            report.republished += 1
        else:
            report.missing.append(position)
            report.missing_detail.append(
                f"{position} holds {event_id!r}, decided at privacy.decisions "
                f"{decided_at.get(position, [])}"
            )
    report.stray = sorted(
        (row["seq"], position)
        for position, recorded in at_position.items()
        if position not in event_ids
        for row in recorded
    )

    # privacy.audit carries the ledger (at least once)
    on_topic: dict[int, set[str]] = defaultdict(set)
    for message in audit.messages:
        record = CODEC.decode("lifecycle.AuditRecord", message.value() or b"")
        on_topic[record["seq"]].add(record["hash"])
    stored = {row["seq"]: row["hash"] for row in rows}
    report.audit_topic_missing = sorted(set(stored) - set(on_topic))
    report.audit_topic_differs = sorted(
        seq for seq, hashes in on_topic.items() if hashes != {stored.get(seq)}
    )

    # decisions as the policy gives them
    if expected_decisions is not None:
        got = {row["event_id"]: (row["decision"], row["reason_code"]) for row in rows}
        report.decisions_changed = sorted(
            (event_id, want, got[event_id])
            for event_id, want in expected_decisions.items()
            if event_id in got and got[event_id] != want
        )

    # confirmations match erasure records
    proven = set()
    for row in rows:
        if row["kind"] != "deletion_requested" or row["decision"] != "allow":
            continue
        if row["erasure"]:
            proven.add((json.loads(row["erasure"])["request_id"], row["seq"]))
        else:
            report.confirmations_missing.append(("(allowed, without an erasure)", row["seq"]))
    confirmed = set()
    for message in confirmations.messages:
        record = CODEC.decode("lifecycle.DeletionConfirmation", message.value() or b"")
        confirmed.add((record["request_id"], record["audit_seq"]))
    report.confirmations = len(confirmed)
    report.confirmed_before_shredded = confirmed_before_shredded(
        env, confirmations.messages, request_times(events.messages)
    )
    report.confirmations_missing += sorted(proven - confirmed)
    report.confirmations_unexpected = sorted(confirmed - proven)

    # everything processed and committed
    for topic, contents in ((CUSTOMER_EVENTS, events), (DECISIONS, decisions)):
        done = committed_offsets(bootstrap, topic, contents.ends)
        behind = {p: (done[p], end) for p, end in contents.ends.items() if done[p] < end}
        if behind:
            report.uncommitted[topic] = behind

    if verify:
        result = run_cli(dict(env), "audit", "verify", timeout=300)
        report.verify_exit = result.returncode
        report.verify_output = (result.stdout + result.stderr).decode(errors="replace").strip()
    return report
