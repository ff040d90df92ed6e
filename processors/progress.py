"""Where each ``customer.events`` partition stands, kept by the intake itself.

Faust's own offset bookkeeping is not used for ``customer.events`` (the topic is declared with
acks off): after a partition moves, the embedded broker can hand the agent an event far ahead
of the partition's position (a record fetched before the move), which Faust counts as a "gap"
and commits past, leaving the events in between undecided. Here every partition is read
strictly in order instead:

* when a partition is (re)assigned, its position is what the consumer group has committed
  (asked of the broker, not remembered from before the move);
* an event at the position is admitted and the position moves on; one behind it was decided
  already and is passed over; one ahead of it means something was skipped, so the consumer is
  sought back to the position and nothing beyond it is decided until the position's event
  arrives;
* an offset is committed only after every event before it in the partition was admitted and
  its outputs were acknowledged (:meth:`Progress.done`), by a timer and before partitions are
  given up in a rebalance (a worker stopping may leave up to :data:`COMMIT_EVERY` of decided
  events uncommitted: their next owner decides them again, to the same decisions, and the
  ledger keeps the first records);
* a partition that stays behind its end without an event for :data:`STALL_AFTER` seconds
  (assigned after a rebalance but never fetched) is resumed and sought back to its position.

A commit therefore never covers an event that was not decided, whatever the consumer delivers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from confluent_kafka import KafkaException
from faust.types import TP

from core.logging import get_logger
from core.retry import retry_call_async
from streams.offsets import end_offsets, start_offsets
from streams.topics import CUSTOMER_EVENTS

log = get_logger(__name__)

COMMIT_EVERY = 1.0
"""Seconds between commits of what is durable (Faust's ``broker_commit_interval``)."""
RESEEK_AFTER = 1.0
"""Seconds before a partition still waiting for its position's event is sought back again."""
STALL_AFTER = 10.0
"""Seconds without an event before a partition behind its end is resumed and sought back."""


@dataclass(slots=True, eq=False)
class _Partition:
    position: int
    """The next offset to admit."""
    done: int
    """Every offset before this one was decided and its outputs acknowledged."""
    committed: int
    """What the group has committed (as far as this worker knows)."""
    moved_at: float = field(default_factory=time.monotonic)
    sought_at: float | None = None
    """When the consumer was last sought back to ``position`` (None: not waiting)."""


@dataclass(slots=True)
class Admitted:
    """The events of a batch to decide, in partition order, and how far they take each
    partition (applied by :meth:`Progress.done` once their outputs are acknowledged)."""

    events: list[Any]
    ends: dict[int, tuple[_Partition, int]] = field(default_factory=dict)


class Progress:
    """Positions and commits of one worker's ``customer.events`` partitions (see module)."""

    def __init__(
        self,
        app: faust.App,
        client_config: Mapping[str, str],
        *,
        topic: str = CUSTOMER_EVENTS,
    ) -> None:
        self._app = app
        self._client_config = dict(client_config)
        self._topic = topic
        self._partitions: dict[int, _Partition] = {}
        self._assigned_at = time.monotonic()
        self._generation = 0
        """Counts revocations: what was read from the broker before one is stale after it."""
        self._in_flight = False
        """A batch was admitted and its outputs are not acknowledged yet (the agent is busy)."""
        self._revoked = False
        """Partitions were revoked and the next assignment has not come yet: the consumer
        still lists the old ones, and events fetched before the revocation may still come."""
        self.passed_over = 0
        """Events behind a partition's position (already decided) that were not decided again."""

    # -- the batch ----------------------------------------------------------------------

    async def admit(self, events: Sequence[Any]) -> Admitted:
        """The events of ``events`` (Faust events of ``customer.events``) to decide now."""
        unknown = {event.message.partition for event in events} - self._partitions.keys()
        if unknown:
            await self._start(unknown)
        admitted = Admitted([])
        now = time.monotonic()
        for event in events:
            message = event.message
            part = self._partitions.get(message.partition)
            if part is None:  # given up while its start was being read
                continue
            if message.offset < part.position:
                self.passed_over += 1
                continue
            if message.offset > part.position:
                await self._seek_back(message.partition, part, message.offset, now)
                continue
            part.position += 1
            part.moved_at = now
            part.sought_at = None
            admitted.events.append(event)
            admitted.ends[message.partition] = (part, part.position)
        self._in_flight = bool(admitted.events)
        return admitted

    def done(self, admitted: Admitted) -> None:
        """The outputs of ``admitted`` are acknowledged: its offsets may be committed."""
        for part, end in admitted.ends.values():
            part.done = max(part.done, end)
        self._in_flight = False

    def committed(self) -> dict[int, int]:
        """Partition -> offset the group has committed (a restart resumes there)."""
        return {number: part.committed for number, part in self._partitions.items()}

    # -- commits and partitions moving ---------------------------------------------------

    async def commit(self) -> None:
        """Commit every partition's ``done`` offset that is not committed yet."""
        assigned = {tp.partition for tp in self._assigned()}
        pending = {
            number: part
            for number, part in self._partitions.items()
            if part.done > part.committed and number in assigned
        }
        if not pending:  # (Faust's driver fails on an empty commit)
            return
        offsets = {TP(self._topic, number): part.done for number, part in pending.items()}
        if await self._app.consumer._commit(offsets):
            for number, part in pending.items():
                part.committed = max(part.committed, offsets[TP(self._topic, number)])

    async def on_revoked(self, revoked: Iterable[TP]) -> None:
        """Before partitions are given up: commit what is durable, then forget them (when a
        partition comes back, its position is read from the group again)."""
        try:
            await self.commit()
        except Exception as exc:  # the next owner starts from the last commit instead
            log.warning("intake.commit_failed", error=type(exc).__name__)
        for tp in revoked:
            if tp.topic == self._topic:
                self._partitions.pop(tp.partition, None)
        self._generation += 1
        self._revoked = True
        self._assigned_at = time.monotonic()

    def on_assigned(self) -> None:
        """The group's new assignment is in place."""
        self._revoked = False
        assigned = {tp.partition for tp in self._assigned()}
        for number in list(self._partitions):
            if number not in assigned:  # (not revoked through on_revoked: forget it now)
                del self._partitions[number]
        self._assigned_at = time.monotonic()

    def attach(self) -> None:
        """Commit every :data:`COMMIT_EVERY` seconds, watch for stalls, follow rebalances."""
        app = self._app

        @app.on_partitions_revoked.connect
        async def revoked(sender: Any, revoked: Iterable[TP], **_: Any) -> None:
            await self.on_revoked(revoked)

        @app.on_partitions_assigned.connect
        async def assigned(sender: Any, *_: Any, **__: Any) -> None:
            self.on_assigned()

        @app.timer(COMMIT_EVERY, on_leader=False, name="lifecycle.intake.commit")
        async def commit_and_watch() -> None:
            if self._settled(self._generation):
                await self.commit()
                await self.watch()

    # -- keeping the order --------------------------------------------------------------

    def _settled(self, generation: int) -> bool:
        """No revocation since ``generation`` and no rebalance or table recovery under way."""
        app = self._app
        return generation == self._generation and not (
            getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False)
        )

    async def _start(self, partitions: set[int]) -> None:
        """Position ``partitions`` where the group has committed (retried while the broker
        cannot answer; left unstarted when they are revoked meanwhile: their events are then
        not admitted, and are read again by their next owner)."""
        if self._revoked:  # events of partitions this worker may no longer own
            return
        group = self._app.conf.id
        wanted = [(self._topic, number) for number in sorted(partitions)]
        generation = self._generation

        def notice(exc: BaseException, _wait: float) -> None:
            log.warning("intake.start_unavailable", error=str(exc))

        starts = await retry_call_async(
            lambda: asyncio.to_thread(start_offsets, self._client_config, group, wanted),
            on=KafkaException,
            first=RESEEK_AFTER,
            most=RESEEK_AFTER,
            notice=notice,
        )
        if generation != self._generation:
            return
        assigned = {tp.partition for tp in self._assigned()}
        for (_topic, number), offset in starts.items():
            if number in assigned and number not in self._partitions:
                self._partitions[number] = _Partition(offset, offset, offset)
                log.info("intake.partition_start", partition=number, offset=offset)

    async def _seek_back(self, number: int, part: _Partition, offset: int, now: float) -> None:
        if part.sought_at is not None and now - part.sought_at < RESEEK_AFTER:
            return  # records fetched before the last seek are still arriving
        log.warning(
            "intake.offset_skipped", partition=number, position=part.position, offset=offset
        )
        part.sought_at = now
        await self._seek(number, part.position)

    async def _seek(self, number: int, offset: int) -> None:
        tp = TP(self._topic, number)
        consumer = self._app.consumer
        try:
            thread = getattr(consumer, "_thread", None)
            if thread is None:  # a consumer without a fetching thread of its own
                await consumer.seek(tp, offset)
                return
            # Faust's seek calls aiokafka's from this thread while the consumer's thread
            # iterates the fetched records: the two threads would race on the fetcher's records
            # (a KeyError that ends the worker). So the seek runs in the consumer's thread,
            # then the read offset is set as Faust's seek does.
            await thread.call_thread(_in_consumer_thread, thread.seek, tp, offset)
            consumer._read_offset[tp] = offset or None
        except Exception as exc:  # not assigned any more: its next owner reads from the commit
            log.warning("intake.seek_failed", partition=number, error=type(exc).__name__)

    def _assigned(self) -> list[TP]:
        try:
            return [tp for tp in self._app.consumer.assignment() if tp.topic == self._topic]
        except Exception:  # no consumer yet
            return []

    async def watch(self) -> None:
        """Seek back partitions still waiting for their position's event, and resume and
        seek back partitions that are behind their end without moving."""
        now = time.monotonic()
        consumer = self._app.consumer
        generation = self._generation
        # Faust's flow control: partitions whose stream buffer is full wait for it, not stalled
        buffered: set[TP] = getattr(consumer, "_buffered_partitions", set())
        idle: list[TP] = []
        for tp in self._assigned():
            part = self._partitions.get(tp.partition)
            if part is not None and part.sought_at is not None:
                if now - part.sought_at >= RESEEK_AFTER:  # the seek's records did not come
                    part.sought_at = now
                    await self._seek(tp.partition, part.position)
                continue
            since = part.moved_at if part is not None else self._assigned_at
            if now - since >= STALL_AFTER and tp not in buffered:
                idle.append(tp)
        if not idle or self._in_flight:  # busy with a batch (a database outage, say)
            return
        try:
            ends = await asyncio.to_thread(
                end_offsets, self._client_config, [(tp.topic, tp.partition) for tp in idle]
            )
        except KafkaException as exc:
            log.warning("intake.ends_unavailable", error=str(exc))
            return
        unknown = {tp.partition for tp in idle} - self._partitions.keys()
        if unknown:
            await self._start(unknown)
        if not self._settled(generation):  # partitions moved meanwhile: look again later
            return
        for tp in idle:
            part = self._partitions.get(tp.partition)
            if part is None or ends.get((tp.topic, tp.partition), 0) <= part.position:
                if part is not None:
                    part.moved_at = now  # at its end: nothing to wait for
                continue
            log.warning(
                "intake.partition_stalled",
                partition=tp.partition,
                position=part.position,
                end=ends[(tp.topic, tp.partition)],
                active=tp in (getattr(consumer, "_active_partitions", None) or ()),
                paused=tp in getattr(consumer, "_paused_partitions", ()),
            )
            consumer.resume_partitions({tp})  # Faust's own sets, read by the fetch loop
            part.moved_at = now
            await self._seek(tp.partition, part.position)


async def _in_consumer_thread(call: Callable[..., object], *args: object) -> None:
    """``call(*args)``, as a coroutine for ``call_thread`` to run in the consumer's thread."""
    call(*args)
