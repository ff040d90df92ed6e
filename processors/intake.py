"""The intake agent: consumes ``customer.events`` in batches, decodes every record, dead-letters
what cannot be decoded, and hands the decoded events of each batch to the decision stage.

Events are taken strictly in offset order per partition, and an offset is committed only after
the batch's outputs (decisions, dead letters) are acknowledged by the broker: both kept by
:class:`processors.progress.Progress`, not by Faust's acks. Any unexpected error stops the
worker process at once, before the batch's offsets can be committed, so that a restart
processes it again: no offset is ever skipped silently.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faust

from core.logging import get_logger
from core.retry import retry_call_async
from processors.deadletters import REDRIVE_OF, DeadLetterQueue, Source
from processors.metrics import Metrics
from processors.progress import Progress
from schemas.kinds import KINDS
from streams.codec import Codec
from streams.exceptions import DecodeError, RegistryUnavailableError
from streams.keys import KeyStore
from streams.outbox import Outbox
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
    """The :data:`~processors.deadletters.REDRIVE_OF` header of a record (Faust gives headers
    as a list of pairs or a mapping), or None."""
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


def register_intake(
    app: faust.App,
    codec: Codec,
    keystore: KeyStore,
    handle: BatchHandler,
    metrics: Metrics,
    outbox: Outbox,
    progress: Progress,
    *,
    partitions: int,
    registry_patience: float = REGISTRY_PATIENCE,
) -> faust.TopicT:
    """The intake agent; ``handle`` produces its outputs into ``outbox``, which is flushed
    (every output acknowledged) before ``progress`` may commit the batch's offsets.
    ``partitions``: how many ``customer.events`` has when the broker's metadata does not say.
    ``registry_patience``: see :func:`decode_event`."""
    # acks off: Faust neither tracks nor commits this topic's offsets (``progress`` does)
    source = app.topic(CUSTOMER_EVENTS, key_type=bytes, value_type=bytes, acks=False)
    progress.attach()
    dlq = DeadLetterQueue(outbox, keystore, metrics)

    def reject(message: Any, error: str) -> None:
        source = Source(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            redrive_header(message.headers),
        )
        dlq.send(source, error)

    def partition_count(topic: str) -> int:
        try:
            return int(app.consumer.topic_partitions(topic) or partitions)
        except Exception:  # no consumer metadata yet
            return partitions

    @app.agent(source, name="lifecycle.intake")
    async def intake(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            try:
                await _process(events)
            except Exception as exc:
                fail_loudly("intake", exc)

    async def _process(batch: Sequence[faust.EventT]) -> None:
        admitted = await progress.admit(batch)
        events = admitted.events
        decoded: list[Decoded] = []
        for event in events:
            message = event.message
            try:
                record = await decode_event(
                    codec, message.value or b"", message.topic, patience=registry_patience
                )
            except DecodeError as exc:
                reject(message, str(exc))
                continue
            key = message.key or b""
            if key != record["subject_ref"].encode():
                reject(message, "record key is not its subject_ref")
                continue
            problem = invalid_event(record)
            if problem is not None:
                reject(message, problem)
                continue
            home = home_partition(key, partition_count(message.topic))
            if home != message.partition:
                # its subject's state lives with partition `home`: deciding it here would
                # judge it against nothing (and split the subject's state in two)
                reject(message, f"record is on partition {message.partition}, its key's is {home}")
                continue
            decoded.append(Decoded(record, message.partition, message.offset, message.value or b""))
        for kind, count in collections.Counter(item.record["kind"] for item in decoded).items():
            metrics.event_consumed(kind, count)
        if decoded:
            refused = await handle(decoded)
            if refused:
                by_position = {(e.message.partition, e.message.offset): e.message for e in events}
                for item, error in refused:
                    reject(by_position[(item.partition, item.offset)], error)
            log.info(
                "batch.decided",
                events=len(decoded) - len(refused),
                refused=len(refused),
                partitions=sorted({item.partition for item in decoded}),
            )
        await outbox.flush()  # raises if the broker refused a decision or a dead letter
        progress.done(admitted)

    return source
