"""The intake: reads ``customer.events`` in batches, decodes every record, dead-letters what
cannot be decoded, and hands the decoded events of each batch to the decision stage.

Faust keeps what it is for here: the consumer group (membership, rebalances, heartbeats), the
subjects table and its recovery from the changelog, timers. Its consumer subscribes to
``customer.events``, so the group assigns its partitions with the table's, but never fetches
them (:meth:`streams.app.LifecycleApp.read_below`). The records are read in bulk by a
:class:`~streams.partition_reader.PartitionReader` instead, assigned exactly the partitions the
group gave this worker once its tables are recovered, at the offsets the group committed: a
record costs a few microseconds to read this way, where Faust's per-event machinery (fetcher,
conductor, channel, stream) costs several times what deciding it does.

One batch at a time: read, admit (:class:`processors.progress.Progress` keeps each
partition strictly in offset order), decode, decide, flush the outbox (every decision, dead
letter and changelog record acknowledged), mark done; commits (through the group member) cover
only what is done, every :data:`~processors.progress.COMMIT_EVERY` seconds, before a
rebalance gives partitions up (after the batch in flight is done) and when the worker stops.
Any unexpected error stops the worker process at once, before the batch's offsets can be
committed, so that a restart processes it again: no offset is ever skipped silently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
import mode
from confluent_kafka import Message
from faust.types import TP

from core.logging import get_logger
from core.retry import retry_call_async
from processors.deadletters import REDRIVE_OF, DeadLetterQueue, Source
from processors.metrics import Metrics
from processors.progress import COMMIT_EVERY, Progress
from schemas.kinds import KINDS
from streams.codec import Codec
from streams.exceptions import DecodeError, RegistryUnavailableError
from streams.keys import KeyStore
from streams.outbox import Outbox
from streams.partition_reader import PartitionReader
from streams.partitioning import home_partition
from streams.topics import CUSTOMER_EVENTS

log = get_logger(__name__)

BATCH_MAX = 2_000
BATCH_WITHIN = 0.05  # seconds

EXIT_AGENT_FAILED = 70

REGISTRY_PATIENCE = 60.0
"""Seconds the intake waits for an unavailable Schema Registry before it stops the worker."""


@dataclass(slots=True)
class Decoded:
    """A decoded event and where it came from."""

    record: dict[str, Any]
    partition: int
    offset: int
    value: bytes = b""
    """The record as it travelled: its source MAC covers these bytes."""


Refused = list[tuple[Decoded, str]]
"""Events the decision stage would not decide, each with the reason (they are dead-lettered)."""

BatchHandler = Callable[[list[Decoded]], Awaitable[Refused]]


_SUBJECT_REF = re.compile(r"^[0-9a-f]{64}$")


def invalid_event(record: dict[str, Any]) -> str | None:
    """Why a record that decodes is still not an event we can decide (None: it is one).

    The schema cannot say that the body must be the one its kind names, nor that ids are not
    empty: a foreign producer can break both, and such a record would otherwise stop the
    decision stage on every restart."""
    body = record["body"]
    kind = KINDS.get(record["kind"])
    if kind is None or set(body) != kind.record_field_names:
        return f"body does not match kind {record['kind']}"
    if not record["event_id"] or not record["source"]:
        return "empty event_id or source"
    if not _SUBJECT_REF.match(record["subject_ref"]):
        return "subject_ref is not an HMAC-SHA256 pseudonym"
    for field in kind.fields:
        if field.form == "text" and not body[field.name]:
            return f"empty {field.name}"
    return None


async def decode_event(
    codec: Codec,
    value: bytes,
    topic: str,
    *,
    patience: float = REGISTRY_PATIENCE,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> dict[str, Any]:
    """The decoded ``lifecycle.CustomerEvent``; raises DecodeError when the record is at
    fault (it is dead-lettered). While the Schema Registry cannot be asked, the record is not
    at fault: retry with backoff, and after ``patience`` seconds raise
    RegistryUnavailableError, which stops the worker before any offset is committed."""

    async def decode() -> dict[str, Any]:
        return codec.decode("lifecycle.CustomerEvent", value, topic)

    def notice(exc: BaseException, wait: float) -> None:
        log.warning("registry.unavailable", retry_in_s=wait, error=str(exc)[:300])

    return await retry_call_async(
        decode,
        on=RegistryUnavailableError,
        first=0.25,
        most=8.0,
        patience=patience,
        notice=notice,
        sleep=sleep,
    )


def redrive_header(headers: Any) -> bytes | None:
    """The :data:`~processors.deadletters.REDRIVE_OF` header of a record (a list of pairs or
    a mapping), or None."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name == REDRIVE_OF and isinstance(value, bytes | str):
            return value.encode() if isinstance(value, str) else value
    return None


def fail_loudly(what: str, exc: BaseException) -> None:
    """Log and end the process now, without acknowledging anything in flight."""
    # the first line only: a database error's text goes on to quote the statement and its
    # parameters (subject_refs, event ids, ciphertext)
    first_line = (str(exc).splitlines() or [""])[0][:300]
    log.critical("worker.failed", stage=what, error=f"{type(exc).__name__}: {first_line}")
    sys.stderr.flush()
    os._exit(EXIT_AGENT_FAILED)


class Intake(mode.Service):  # type: ignore[misc]  # mode is untyped here
    """Reads, decodes and hands on ``customer.events`` batches for as long as the app runs
    (see the module docstring); wired into its app by :func:`register_intake`.

    ``handle`` produces its outputs into ``outbox``, which is flushed (every output
    acknowledged) before ``progress`` may commit the batch's offsets; ``reader`` reads the
    partitions ``progress`` starts. ``partitions``: how many ``customer.events`` has when the
    broker's metadata does not say. ``registry_patience``: see :func:`decode_event`."""

    def __init__(
        self,
        app: faust.App,
        codec: Codec,
        keystore: KeyStore,
        handle: BatchHandler,
        metrics: Metrics,
        outbox: Outbox,
        progress: Progress,
        reader: PartitionReader,
        *,
        partitions: int,
        registry_patience: float = REGISTRY_PATIENCE,
    ) -> None:
        super().__init__()
        self._app = app
        self._codec = codec
        self._handle = handle
        self._metrics = metrics
        self._outbox = outbox
        self._progress = progress
        self._reader = reader
        self._partitions = partitions
        self._registry_patience = registry_patience
        self._dlq = DeadLetterQueue(outbox, keystore, metrics)
        self._lock = asyncio.Lock()
        """Held by a batch from its read to its outputs' acknowledgement, and by whatever moves
        partitions (a rebalance waits for the batch in flight)."""
        self._start_due = False
        """The group's assignment is in place and the tables recovered: start reading it."""
        self._stopping = False
        self._wake = asyncio.Event()

    # -- partitions moving --------------------------------------------------------------

    def assignment_ready(self) -> None:
        """The app's tables are recovered for its new assignment (Faust resumes its streams
        now): read the assigned partitions from the next batch on."""
        self._start_due = True
        self._wake.set()

    async def revoke(self, revoked: Iterable[TP]) -> None:
        """Partitions are being given up: let the batch in flight finish (its outputs
        acknowledged), commit what is durable, and stop reading them."""
        async with self._lock:
            self._start_due = False
            await self._progress.on_revoked(revoked)

    async def drain(self) -> None:
        """The app is stopping (its consumer still in the group): finish the batch in flight,
        commit what is durable, and release the reader."""
        self._stopping = True
        self._wake.set()
        async with self._lock:
            try:
                await self._progress.commit()
            except Exception as exc:  # the next owner starts from the last commit instead
                log.warning("intake.commit_failed", error=type(exc).__name__)
            await self._reader.close()

    def highwater(self, partition: int) -> int | None:
        """Where ``partition`` ends, as the reader's latest fetch saw it."""
        return self._reader.highwater(partition)

    # -- the batches ----------------------------------------------------------------------

    @mode.Service.task
    async def _read_batches(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            fail_loudly("intake", exc)

    async def _run(self) -> None:
        progress, reader = self._progress, self._reader
        next_commit = time.monotonic() + COMMIT_EVERY
        while not self._stopping:
            async with self._lock:
                if self._stopping:
                    break
                if self._start_due:
                    self._start_due = False
                    await progress.start()
                messages = await reader.read(BATCH_MAX, BATCH_WITHIN)
                if messages:
                    await self._process(messages)
                await progress.seek_back()
                if time.monotonic() >= next_commit and progress.settled():
                    next_commit = time.monotonic() + COMMIT_EVERY
                    await progress.commit()
                    await progress.watch()
            if not reader.assigned:  # nothing to read until the next assignment is ready
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), COMMIT_EVERY)
            else:
                await asyncio.sleep(0)  # let a rebalance's callbacks have the lock

    def _reject(self, message: Message, error: str) -> None:
        source = Source(
            message.topic() or CUSTOMER_EVENTS,
            message.partition() or 0,
            message.offset() or 0,
            message.key(),
            message.value(),
            redrive_header(message.headers()),
        )
        self._dlq.send(source, error)

    def _partition_count(self, topic: str) -> int:
        try:
            return int(self._app.consumer.topic_partitions(topic) or self._partitions)
        except Exception:  # no consumer metadata yet
            return self._partitions

    async def _decode(self, value: bytes, topic: str) -> dict[str, Any]:
        try:
            return self._codec.decode("lifecycle.CustomerEvent", value, topic)
        except RegistryUnavailableError:  # not the record's fault: wait for the registry
            return await decode_event(self._codec, value, topic, patience=self._registry_patience)

    async def _process(self, messages: list[Message]) -> None:
        admitted = self._progress.admit(messages)
        count = self._partition_count(CUSTOMER_EVENTS)
        decoded: list[Decoded] = []
        for message in admitted.messages:
            value = message.value() or b""
            topic = message.topic() or CUSTOMER_EVENTS
            partition = message.partition() or 0
            try:
                record = await self._decode(value, topic)
            except DecodeError as exc:
                self._reject(message, str(exc))
                continue
            key = message.key() or b""
            if key != record["subject_ref"].encode():
                self._reject(message, "record key is not its subject_ref")
                continue
            problem = invalid_event(record)
            if problem is not None:
                self._reject(message, problem)
                continue
            home = home_partition(key, count)
            if home != partition:
                # its subject's state lives with partition `home`: deciding it here would
                # judge it against nothing (and split the subject's state in two)
                self._reject(message, f"record is on partition {partition}, its key's is {home}")
                continue
            decoded.append(Decoded(record, partition, message.offset() or 0, value))
        kinds = collections.Counter(item.record["kind"] for item in decoded)
        for kind, number in kinds.items():
            self._metrics.event_consumed(kind, number)
        if decoded:
            refused = await self._handle(decoded)
            if refused:
                by_position = {(m.partition(), m.offset()): m for m in admitted.messages}
                for item, error in refused:
                    self._reject(by_position[(item.partition, item.offset)], error)
            log.info(
                "batch.decided",
                events=len(decoded) - len(refused),
                refused=len(refused),
                partitions=sorted({item.partition for item in decoded}),
            )
        await self._outbox.flush()  # raises if the broker refused a decision or a dead letter
        self._progress.done(admitted)


def register_intake(app: faust.App, intake: Intake) -> Intake:
    """``intake`` wired into ``app`` (a :class:`~streams.app.LifecycleApp`, the one it was
    made for): it reads ``customer.events`` below Faust's consumer, starts and stops with the
    app, gives up revoked partitions and starts reading once a rebalance is complete."""
    app.read_below(CUSTOMER_EVENTS, intake.drain)
    app.add_dependency(intake)

    @app.on_partitions_revoked.connect
    async def revoked(sender: Any, revoked: Iterable[TP], **_: Any) -> None:
        await intake.revoke(revoked)

    @app.on_rebalance_complete.connect
    async def ready(sender: Any, **_: Any) -> None:  # tables recovered: streams resume now
        intake.assignment_ready()

    return intake
