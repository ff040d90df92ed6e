"""The ledger stage: a Faust agent that appends every decision to the audit ledger, then
publishes the stored records to ``privacy.audit`` and erasure confirmations to
``privacy.deletion-confirmations``.

Order of effects for a batch: append to the database (one transaction: durable), then publish
and wait for the broker's acknowledgements, then acknowledge the batch's offsets. A crash at
any point replays the batch: the ledger drops the decisions it already holds and returns their
stored records, which are published again (so ``privacy.audit`` is at-least-once and readers
deduplicate by ``seq``; ``audit replay`` does). A database that is down stops the agent, retrying,
and no offset is committed until the batch is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust

from lifecycle.logging import get_logger
from lifecycle.observability import Metrics
from lifecycle.runtime import Runtime
from processors.deadletters import DeadLetterQueue
from processors.intake import fail_loudly
from sinks.chain import AuditEntry
from sinks.exceptions import InvalidDecisionError, LedgerUnavailableError
from sinks.ledger import SqlAuditSink
from streams.exceptions import DecodeError
from streams.topics import AUDIT, CONFIRMATIONS, DECISIONS

log = get_logger(__name__)

BATCH_MAX = 5_000
BATCH_WITHIN = 0.05
RETRY_FIRST, RETRY_MAX = 0.2, 5.0
CHECKPOINT_TIMER = 5.0


def confirmation_record(entry: AuditEntry) -> dict[str, Any] | None:
    """The deletion confirmation an erasure decision proves (None for other decisions)."""
    decision = entry.decision()
    erasure = decision.get("erasure")
    if decision["kind"] != "deletion_requested" or not erasure:
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


def register_ledger(app: faust.App, runtime: Runtime, sink: SqlAuditSink, metrics: Metrics) -> None:
    codec, keystore = runtime.codec, runtime.keystore
    raw = {"key_type": bytes, "value_type": bytes}
    source = app.topic(DECISIONS, **raw)
    audit = app.topic(AUDIT, partitions=1, **raw)
    confirmations = app.topic(CONFIRMATIONS, partitions=1, **raw)
    dlq = DeadLetterQueue(app, keystore, metrics)

    async def append(decisions: list[dict[str, Any]]) -> list[AuditEntry]:
        delay = RETRY_FIRST
        while True:
            try:
                return sink.append(decisions)
            except LedgerUnavailableError as exc:
                log.error("ledger.unavailable", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def process(stream: faust.StreamT, events: Sequence[faust.EventT]) -> None:
        decisions: list[dict[str, Any]] = []
        sources: list[faust.EventT] = []
        pending: list[Any] = []

        async def reject(event: faust.EventT, error: str) -> None:
            pending.append(await dlq.send(event, error))

        for event in events:
            try:
                decisions.append(
                    codec.decode("lifecycle.Decision", event.message.value or b"", DECISIONS)
                )
                sources.append(event)
            except DecodeError as exc:
                await reject(event, str(exc))
        metrics.ledger_batch_started(
            len(decisions), min((d["decided_at"] for d in decisions), default=None)
        )
        while True:
            try:
                entries = await append(decisions)
                break
            except InvalidDecisionError as exc:  # drop the bad one, keep the rest of the batch
                await reject(sources.pop(exc.index), str(exc))
                decisions.pop(exc.index)
        metrics.ledger_batch_durable(len(entries))
        for entry in sorted(entries, key=lambda e: e.seq):
            key = entry.subject_ref.encode()
            pending.append(
                await audit.send(
                    key=key,
                    value=codec.encode("lifecycle.AuditRecord", entry.as_audit_record(), AUDIT),
                )
            )
            confirmation = confirmation_record(entry)
            if confirmation is not None:
                pending.append(
                    await confirmations.send(
                        key=key,
                        value=codec.encode(
                            "lifecycle.DeletionConfirmation", confirmation, CONFIRMATIONS
                        ),
                    )
                )
                log.info(
                    "erasure.confirmed",
                    request_id=confirmation["request_id"],
                    subject_ref=entry.subject_ref,
                    audit_seq=entry.seq,
                )
        await asyncio.gather(*pending)
        for event in events:
            await stream.ack(event)

    @app.agent(source, name="lifecycle.ledger")
    async def ledger(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            try:
                await process(stream, events)
            except Exception as exc:
                fail_loudly("ledger", exc)

    @app.timer(CHECKPOINT_TIMER, on_leader=False)
    async def checkpoint() -> None:
        try:
            sink.checkpoint(only_if_due=True)
        except LedgerUnavailableError as exc:
            log.error("ledger.checkpoint_failed", error=str(exc))
