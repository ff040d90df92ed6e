"""The ledger stage: appends every decision on ``privacy.decisions`` to the audit ledger, then
publishes the stored records to ``privacy.audit`` and erasure confirmations to
``privacy.deletion-confirmations``.

It is a sink, not a processor: a confluent-kafka consumer (group ``<app id>-ledger``) in a
thread of each worker process, started and stopped with the worker's Faust app. It reads
decisions in batches of up to 5,000 straight from librdkafka, without Faust's per-event
machinery, which would otherwise be paid twice for every event in the same process: whatever
has arrived, without waiting for more (see :meth:`LedgerStage._read`).

Order of effects for a batch: append to the database (one transaction: durable), then publish
and wait for every acknowledgement, then commit the batch's offsets. A crash at any point
replays the batch: the ledger drops the decisions it already holds and returns their stored
records, which are published again (so ``privacy.audit`` is at-least-once and readers
deduplicate by ``seq``; ``audit replay`` does). A database that is down stops the stage,
retrying, and no offset is committed until the batch is durable. A commit refused because the
group moved the partitions meanwhile (the broker stalled past the session timeout, say) is
logged and dropped: the batch is durable, and the partitions' next owner finds its decisions
in the ledger. Any other error ends the process without committing (see
:func:`processors.intake.fail_loudly`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import mode
from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from core.logging import get_logger, librdkafka_logger
from core.retry import retry_call
from processors.deadletters import DeadLetterQueue, Source
from processors.intake import fail_loudly
from processors.metrics import Metrics
from processors.resources import Resources
from schemas.kinds import judged_as
from sinks.entry import AuditEntry
from sinks.exceptions import InvalidDecisionError, LedgerUnavailableError
from sinks.ledger import SqlAuditSink
from streams.exceptions import DecodeError
from streams.outbox import Outbox
from streams.topics import AUDIT, CONFIRMATIONS, DECISIONS

log = get_logger(__name__)

BATCH_MAX = 5_000
BATCH_WITHIN = 0.05
RETRY_FIRST, RETRY_MAX = 0.2, 5.0
GROUP_MOVED_ON = frozenset(
    {
        KafkaError._ASSIGNMENT_LOST,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
"""Commit errors that mean the group has given this batch's partitions to a new generation."""
CHECKPOINT_EVERY = 5.0  # seconds between "is a signed checkpoint due?" checks


def confirmation_record(entry: AuditEntry) -> dict[str, Any] | None:
    """The deletion confirmation an erasure decision proves (None for other decisions)."""
    decision = entry.decision()
    erasure = decision.get("erasure")
    if judged_as(decision["kind"]) != "erasure" or not erasure:
        return None
    return {
        "request_id": erasure["request_id"],
        "subject_ref": decision["subject_ref"],
        "status": erasure["status"],
        "shredded_categories": list(erasure["shredded"]),
        "retained_categories": list(erasure["retained"]),
        "completed_at": decision["decided_at"],
        "audit_seq": entry.seq,
        "audit_hash": entry.hash,
    }


class LedgerStage:
    """Consumes ``privacy.decisions`` and fills the ledger (see the module docstring)."""

    def __init__(
        self, runtime: Resources, sink: SqlAuditSink, metrics: Metrics, group: str
    ) -> None:
        config = runtime.settings.kafka_client_config()
        consumer_config = runtime.settings.kafka_consumer_config()
        self._codec = runtime.codec
        self._sink = sink
        self._metrics = metrics
        self._outbox = Outbox(config)
        self._dlq = DeadLetterQueue(self._outbox, runtime.keystore, metrics)
        self._consumer = Consumer(
            {
                **consumer_config,
                "group.id": group,
                "enable.auto.commit": False,
                "logger": librdkafka_logger(),
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,  # joins in ~3 s on the embedded broker (vs 20+ s)
                "heartbeat.interval.ms": 1000,
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)

    def start(self) -> None:
        self._consumer.subscribe([DECISIONS])
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _run(self) -> None:
        next_checkpoint = time.monotonic() + CHECKPOINT_EVERY
        try:
            while not self._stop.is_set():
                messages = self._read()
                batch = [m for m in messages if m.error() is None]
                for message in messages:
                    if message.error() is not None:
                        log.warning("ledger.consume_error", error=str(message.error()))
                if batch:
                    self._process(batch)
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + CHECKPOINT_EVERY
                    self._checkpoint()
            self._sink.close()  # signs the unsigned tail
        except Exception as exc:
            fail_loudly("ledger", exc)
        finally:
            self._consumer.close()  # leaves the group

    def _read(self) -> list[Message]:
        """The decisions fetched already (up to :data:`BATCH_MAX`) or, when there are none,
        those that come first within :data:`BATCH_WITHIN` seconds. A batch is never held back
        to fill up: ``consume`` with a timeout waits all of it out unless ``BATCH_MAX``
        records come, and an erasure's confirmation would wait with it. The batch grows by
        itself while the one before it is being stored."""
        consumer = self._consumer
        messages = consumer.consume(BATCH_MAX, 0)
        if messages:
            return messages
        first = consumer.poll(BATCH_WITHIN)
        if first is None:
            return []
        return [first, *consumer.consume(BATCH_MAX - 1, 0)]

    def _process(self, batch: list[Message]) -> None:
        decisions: list[dict[str, Any]] = []
        sources: list[Message] = []
        for message in batch:
            try:
                decisions.append(
                    self._codec.decode("lifecycle.Decision", message.value() or b"", DECISIONS)
                )
                sources.append(message)
            except DecodeError as exc:
                self._reject(message, str(exc))
        self._metrics.ledger_batch_started(
            len(decisions), min((d["decided_at"] for d in decisions), default=None)
        )
        while True:
            try:
                entries = self._append(decisions)
                break
            except InvalidDecisionError as exc:  # drop the bad one, keep the rest of the batch
                self._reject(sources.pop(exc.index), str(exc))
                decisions.pop(exc.index)
        self._metrics.ledger_batch_durable(len(entries))
        for entry in sorted(entries, key=lambda e: e.seq):
            key = entry.subject_ref.encode()
            self._outbox.produce(
                AUDIT,
                self._codec.encode("lifecycle.AuditRecord", entry.as_audit_record(), AUDIT),
                key,
            )
            confirmation = confirmation_record(entry)
            if confirmation is not None:
                self._outbox.produce(
                    CONFIRMATIONS,
                    self._codec.encode(
                        "lifecycle.DeletionConfirmation", confirmation, CONFIRMATIONS
                    ),
                    key,
                )
                log.info(
                    "erasure.confirmed",
                    request_id=confirmation["request_id"],
                    subject_ref=entry.subject_ref,
                    audit_seq=entry.seq,
                )
        self._outbox.flush_now()  # raises if the broker refused a record
        try:
            self._consumer.commit(asynchronous=False)  # the positions just past this batch
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or error.code() not in GROUP_MOVED_ON:
                raise
            log.warning("ledger.commit_dropped", error=error.str(), records=len(entries))

    def _append(self, decisions: list[dict[str, Any]]) -> list[AuditEntry]:
        """The batch appended, retried while the database is down (until the stage stops)."""

        def notice(exc: BaseException, wait: float) -> None:
            log.error("ledger.unavailable", error=str(exc), retry_in=wait)

        return retry_call(
            lambda: self._sink.append(decisions),
            on=LedgerUnavailableError,
            first=RETRY_FIRST,
            most=RETRY_MAX,
            stop=self._stop,
            notice=notice,
        )

    def _reject(self, message: Message, error: str) -> None:
        source = Source(
            message.topic() or DECISIONS,
            message.partition() or 0,
            message.offset() or 0,
            message.key(),
            message.value(),
        )
        self._dlq.send(source, error)

    def _checkpoint(self) -> None:
        try:
            self._sink.checkpoint(only_if_due=True)
        except LedgerUnavailableError as exc:
            log.error("ledger.checkpoint_failed", error=str(exc))


class LedgerService(mode.Service):  # type: ignore[misc]  # mode is untyped here
    """Runs a :class:`LedgerStage` for as long as the Faust app runs."""

    def __init__(self, stage: LedgerStage, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stage = stage

    async def on_start(self) -> None:
        self._stage.start()

    async def on_stop(self) -> None:
        await asyncio.to_thread(self._stage.stop)
