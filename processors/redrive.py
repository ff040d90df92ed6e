"""Sending dead letters back to ``customer.events`` once their cause is fixed
(``lifecycle deadletters list`` and ``lifecycle deadletters redrive``).

A dead letter holds its record sealed under the quarantine key (:mod:`processors.deadletters`).
A redrive opens it, checks it against the SHA-256 its headers recorded, and publishes the
original key and value to ``customer.events`` with a ``lifecycle.redrive.of`` header naming
the dead letter; the workers then decide it like any event. If it fails again, the workers
dead-letter it again, with the new error and that header, and ``redrive --all`` leaves such
records alone (no loop): the operator names one with ``--offset`` once the new cause is fixed.

Each redrive is a ledger record, published to ``privacy.decisions`` like a decision:
kind ``dead_letter_redriven``, ``event_id`` ``redrive/customer.events.dlq/<partition>/<offset>``,
the dead letter's source partition and offset, and in ``rule`` who sent it back; never its
content. Safe to repeat: a dead letter already redriven (its record is in the ledger), or whose
event the ledger already holds, is skipped, so an event keeps its one decision.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from sqlalchemy import Engine

from core.clock import Clock, SystemClock
from core.errors import LifecycleError
from core.retry import retry_call
from processors.deadletters import REDRIVE_OF, open_dead_letter
from processors.system_records import system_decision
from schemas.kinds import DEAD_LETTER_REDRIVEN
from sinks.ledger import AuditLedger
from streams import clients
from streams.clients import ClientConfig
from streams.codec import Codec
from streams.exceptions import BrokerError, DecodeError, KeyShreddedError, KeyStoreError
from streams.keys import KeyStore
from streams.reader import TopicReader
from streams.topics import CUSTOMER_EVENTS, DEAD_LETTERS, DECISIONS

REDRIVE_KIND = DEAD_LETTER_REDRIVEN
REDRIVE_SOURCE = "deadletters"
_PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")
_OPERATOR = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
NO_SUBJECT = "-"
"""``subject_ref`` of a redrive record whose record names no pseudonym."""


class RedriveError(LifecycleError):
    """The dead letters cannot be read or sent back (names why)."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One record of ``customer.events.dlq``: where it came from and why, and its sealed
    content (never shown)."""

    partition: int
    offset: int
    dead_lettered_at: datetime | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    error: str
    value_sha256: str | None
    key_version: int | None
    redrive_of: str | None
    sealed: bytes

    @property
    def position(self) -> str:
        return f"{DEAD_LETTERS}/{self.partition}/{self.offset}"

    @property
    def source_position(self) -> str:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    @property
    def redrive_id(self) -> str:
        """The ``event_id`` of the ledger record of its redrive."""
        return f"redrive/{self.position}"

    def listing(self) -> dict[str, Any]:
        """What ``deadletters list`` shows: position, source, error, when; no content."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "dead_lettered_at": None
            if self.dead_lettered_at is None
            else self.dead_lettered_at.isoformat(timespec="milliseconds"),
            "source": self.source_position,
            "error": self.error,
            "redrive_of": self.redrive_of,
        }


def _header_text(headers: dict[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode(errors="replace")


def _header_int(headers: dict[str, bytes], name: str) -> int | None:
    text = _header_text(headers, name)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def dead_letter_of(message: Message) -> DeadLetterRecord:
    raw = message.headers() or []
    pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
    headers = {
        name: value if isinstance(value, bytes) else str(value).encode()
        for name, value in pairs
        if value is not None
    }
    _kind, millis = message.timestamp()
    at = None if millis is None or millis < 0 else datetime.fromtimestamp(millis / 1000, UTC)
    return DeadLetterRecord(
        partition=int(message.partition() or 0),
        offset=int(message.offset() or 0),
        dead_lettered_at=at,
        source_topic=_header_text(headers, "lifecycle.source.topic"),
        source_partition=_header_int(headers, "lifecycle.source.partition"),
        source_offset=_header_int(headers, "lifecycle.source.offset"),
        error=_header_text(headers, "lifecycle.error") or "",
        value_sha256=_header_text(headers, "lifecycle.value.sha256"),
        key_version=_header_int(headers, "lifecycle.quarantine.key_version"),
        redrive_of=_header_text(headers, REDRIVE_OF),
        sealed=message.value() or b"",
    )


def read_dead_letters(client_config: ClientConfig) -> list[DeadLetterRecord]:
    """Every record of ``customer.events.dlq``, oldest first (no consumer group, nothing
    committed)."""
    try:
        reader = TopicReader(client_config, DEAD_LETTERS, label="deadletters")
        letters = [dead_letter_of(message) for message in reader.messages()]
    except (BrokerError, KafkaException) as exc:
        raise RedriveError(f"reading {DEAD_LETTERS}: {exc}") from exc
    return sorted(letters, key=lambda letter: (letter.partition, letter.offset))


def ledger_seqs(engine: Engine, event_ids: Iterable[str]) -> dict[str, int]:
    """event_id -> seq, for those of ``event_ids`` the audit ledger holds."""
    held = AuditLedger(engine, create=False).recorded_events(list(dict.fromkeys(event_ids)))
    return {event_id: entry.seq for event_id, entry in held.items()}


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class Plan:
    """What a redrive does with one dead letter: ``redrive`` it, or ``skip`` it (``reason``)."""

    letter: DeadLetterRecord
    action: str
    reason: str
    key: bytes | None = None
    value: bytes | None = None
    event_id: str | None = None
    subject_ref: str = NO_SUBJECT

    @property
    def redriving(self) -> bool:
        return self.action == "redrive"


def plan_redrive(
    letters: Sequence[DeadLetterRecord],
    *,
    offsets: set[int] | None,
    keystore: KeyStore,
    codec: Codec,
    engine: Engine,
) -> list[Plan]:
    """What to do with each of ``letters`` (only those at ``offsets`` when given; else all,
    except the records a redrive sent back that failed again)."""
    chosen = [letter for letter in letters if offsets is None or letter.offset in offsets]
    redriven = ledger_seqs(engine, (letter.redrive_id for letter in chosen))
    opened: list[tuple[DeadLetterRecord, bytes, bytes, dict[str, Any] | None]] = []
    plans: list[Plan] = []
    for letter in chosen:
        if letter.redrive_id in redriven:
            plans.append(
                Plan(letter, "skip", f"already redriven (audit seq {redriven[letter.redrive_id]})")
            )
        elif letter.source_topic != CUSTOMER_EVENTS:
            plans.append(
                Plan(letter, "skip", f"not from {CUSTOMER_EVENTS} ({letter.source_topic})")
            )
        elif offsets is None and letter.redrive_of is not None:
            plans.append(
                Plan(
                    letter,
                    "skip",
                    f"failed again after a redrive of {letter.redrive_of}: fix its cause, then "
                    f"redrive it with --offset {letter.offset}",
                )
            )
        else:
            problem, content = _open(letter, keystore)
            if content is None:
                plans.append(Plan(letter, "skip", problem))
                continue
            key, value = content
            try:
                event: dict[str, Any] | None = codec.decode(
                    "lifecycle.CustomerEvent", value, CUSTOMER_EVENTS
                )
            except DecodeError:
                event = None
            except Exception:  # a registry outage: the workers judge it when it is back
                event = None
            opened.append((letter, key, value, event))
    decided = ledger_seqs(engine, (e["event_id"] for _, _, _, e in opened if e is not None))
    for letter, raw_key, raw_value, event in opened:
        subject = raw_key.decode(errors="replace")
        subject_ref = subject if _PSEUDONYM.match(subject) else NO_SUBJECT
        if event is None:
            plans.append(
                Plan(
                    letter,
                    "redrive",
                    "does not decode here; the workers will judge it again",
                    raw_key or None,
                    raw_value,
                    None,
                    subject_ref,
                )
            )
            continue
        event_id = str(event["event_id"])
        if event_id in decided:
            plans.append(
                Plan(
                    letter,
                    "skip",
                    f"event {event_id} is already decided (audit seq {decided[event_id]})",
                )
            )
            continue
        plans.append(
            Plan(
                letter,
                "redrive",
                f"event {event_id} ({event['kind']})",
                raw_key or None,
                raw_value,
                event_id,
                subject_ref,
            )
        )
    order = {id(letter): index for index, letter in enumerate(chosen)}
    return sorted(plans, key=lambda plan: order[id(plan.letter)])


def _open(letter: DeadLetterRecord, keystore: KeyStore) -> tuple[str, tuple[bytes, bytes] | None]:
    if letter.key_version is None:
        return "its headers name no quarantine key", None
    try:
        key, value = open_dead_letter(
            keystore, letter.sealed, letter.source_position, letter.key_version
        )
    except KeyShreddedError:
        return "its quarantine key was destroyed: the content is gone", None
    except (DecodeError, KeyStoreError) as exc:
        return f"cannot be opened: {exc}", None
    if letter.value_sha256 and hashlib.sha256(value).hexdigest() != letter.value_sha256:
        return "its content does not match the SHA-256 recorded when it was dead-lettered", None
    return "", (key, value)


# --------------------------------------------------------------------------- sending back


def redrive_record(
    plan: Plan, *, operator: str, policy_version: str, now: datetime
) -> dict[str, Any]:
    """The ledger record (a ``lifecycle.Decision``) of one redrive: who, which dead letter and
    where it came from; nothing of its content."""
    letter = plan.letter
    return system_decision(
        event_id=letter.redrive_id,
        kind=REDRIVE_KIND,
        subject_ref=plan.subject_ref,
        source=REDRIVE_SOURCE,
        reason_code="allowed",
        rule=(
            f"dead letter {letter.position} (from {letter.source_position}) sent back to "
            f"{CUSTOMER_EVENTS} by operator {operator}"
        ),
        policy_version=policy_version,
        occurred_at=now,
        decided_at=now,
        source_partition=-1 if letter.source_partition is None else letter.source_partition,
        source_offset=-1 if letter.source_offset is None else letter.source_offset,
    )


def check_operator(name: str) -> str:
    if not _OPERATOR.match(name):
        raise RedriveError(
            f"operator name {name!r}: 1 to 64 letters, digits or . _ @ + - (give --by NAME)"
        )
    return name


def redrive(
    plans: Sequence[Plan],
    *,
    client_config: ClientConfig,
    codec: Codec,
    operator: str,
    policy_version: str,
    clock: Clock | None = None,
    timeout: float = 60.0,
) -> int:
    """Send back every plan to redrive: its ledger record to ``privacy.decisions``, its record
    to ``customer.events``; returns how many, once the broker acknowledged them all."""
    chosen = [plan for plan in plans if plan.redriving]
    if not chosen:
        return 0
    check_operator(operator)
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error}")

    producer = clients.producer(client_config)
    now = (clock or SystemClock())()
    for plan in chosen:
        record = redrive_record(plan, operator=operator, policy_version=policy_version, now=now)
        clients.produce(
            producer,
            DECISIONS,
            codec.encode("lifecycle.Decision", record, DECISIONS),
            plan.subject_ref.encode(),
            on_delivery=delivered,
        )
        clients.produce(
            producer,
            CUSTOMER_EVENTS,
            plan.value or b"",
            plan.key,
            headers=[(REDRIVE_OF, plan.letter.position.encode())],
            on_delivery=delivered,
        )
    left = producer.flush(timeout)
    if left or failures:
        detail = failures[0] if failures else f"{left} records not acknowledged in {timeout:.0f} s"
        raise RedriveError(f"the broker did not take the redrive: {detail}")
    return len(chosen)


class _NotYetRecorded(Exception):
    pass


def wait_until_recorded(
    engine: Engine, plans: Sequence[Plan], timeout: float, poll: float = 0.5
) -> dict[str, int]:
    """Wait (up to ``timeout``) until the ledger holds the redrive records of ``plans``;
    the seqs found (redrive event_id -> seq)."""
    wanted = [plan.letter.redrive_id for plan in plans if plan.redriving]
    found: dict[str, int] = {}

    def look() -> dict[str, int]:
        found.update(ledger_seqs(engine, wanted))
        if len(found) < len(wanted):
            raise _NotYetRecorded
        return found

    if not wanted:
        return found
    try:
        return retry_call(look, on=_NotYetRecorded, first=poll, most=poll, within=timeout)
    except _NotYetRecorded:
        return found


__all__ = [
    "NO_SUBJECT",
    "REDRIVE_KIND",
    "DeadLetterRecord",
    "Plan",
    "RedriveError",
    "check_operator",
    "ledger_seqs",
    "plan_redrive",
    "read_dead_letters",
    "redrive",
    "redrive_record",
    "wait_until_recorded",
]
