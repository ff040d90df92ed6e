"""Where each ``customer.events`` partition stands, kept by the intake itself.

The intake reads ``customer.events`` with a :class:`~streams.partition_reader.PartitionReader`
(the partitions the group gave the worker's Faust consumer, read outside the group) and
commits through the group member. Every partition is read strictly in order:

* when a partition is (re)assigned and the worker's tables are recovered, its position is what
  the consumer group has committed (asked of the broker, not remembered from before the move),
  and the reader starts there;
* an event at the position is admitted and the position moves on; one behind it was decided
  already and is passed over; one ahead of it means something was skipped, so the reader is
  sought back to the position and nothing beyond it is decided until the position's event
  arrives;
* an offset is committed only after every event before it in the partition was admitted and
  its outputs were acknowledged (:meth:`Progress.done`): every :data:`COMMIT_EVERY` seconds,
  before partitions are given up in a rebalance, and when the worker stops;
* a partition that stays behind its end without an event for :data:`STALL_AFTER` seconds is
  sought back to its position.

A commit therefore never covers an event that was not decided, whatever the reader delivers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import faust
from confluent_kafka import KafkaException, Message
from faust.types import TP

from core.logging import get_logger
from core.retry import retry_call_async
from streams.offsets import end_offsets, start_offsets
from streams.topics import CUSTOMER_EVENTS

log = get_logger(__name__)

COMMIT_EVERY = 1.0
"""Seconds between commits of what is durable."""
RESEEK_AFTER = 1.0
"""Seconds before a partition still waiting for its position's event is sought back again."""
STALL_AFTER = 10.0
"""Seconds without an event before a partition behind its end is sought back."""


class Reader(Protocol):
    """What :class:`Progress` asks of the reader of its partitions
    (:class:`~streams.partition_reader.PartitionReader`)."""

    @property
    def assigned(self) -> frozenset[int]: ...

    async def assign(self, starts: Mapping[int, int]) -> None: ...

    async def unassign(self, partitions: Iterable[int]) -> None: ...

    async def seek(self, partition: int, offset: int) -> None: ...


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
    """When the reader was last sought back to ``position`` (None: not waiting)."""


@dataclass(slots=True)
class Admitted:
    """The records of a batch to decide, in partition order, and how far they take each
    partition (applied by :meth:`Progress.done` once their outputs are acknowledged)."""

    messages: list[Message]
    ends: dict[int, tuple[_Partition, int]] = field(default_factory=dict)


class Progress:
    """Positions and commits of one worker's ``customer.events`` partitions (see module)."""

    def __init__(
        self,
        app: faust.App,
        client_config: Mapping[str, str],
        reader: Reader,
        *,
        topic: str = CUSTOMER_EVENTS,
    ) -> None:
        self._app = app
        self._client_config = dict(client_config)
        self._reader = reader
        self._topic = topic
        self._partitions: dict[int, _Partition] = {}
        self._generation = 0
        """Counts revocations: what was read from the broker before one is stale after it."""
        self._in_flight = False
        """A batch was admitted and its outputs are not acknowledged yet."""
        self.passed_over = 0
        """Events behind a partition's position (already decided) that were not decided again."""

    # -- the batch ----------------------------------------------------------------------

    def admit(self, messages: Sequence[Message]) -> Admitted:
        """The records of ``messages`` (read from ``customer.events``) to decide now; records
        ahead of their partition's position are noted for :meth:`seek_back`."""
        admitted = Admitted([])
        now = time.monotonic()
        partitions = self._partitions
        for message in messages:
            number = message.partition()
            part = partitions.get(number)  # type: ignore[arg-type]
            if part is None:  # given up since it was read
                continue
            offset = message.offset()
            if offset == part.position:
                part.position += 1
                admitted.messages.append(message)
                admitted.ends[number] = (part, part.position)  # type: ignore[index]
            elif offset < part.position:  # type: ignore[operator]
                self.passed_over += 1
            elif part.sought_at is None or now - part.sought_at >= RESEEK_AFTER:
                # a record ahead of the position: something before it was not read
                log.warning(
                    "intake.offset_skipped", partition=number, position=part.position, offset=offset
                )
                part.sought_at = now - RESEEK_AFTER  # sought back by seek_back, now
        for part, _end in admitted.ends.values():
            part.moved_at = now
            part.sought_at = None
        self._in_flight = bool(admitted.messages)
        return admitted

    async def seek_back(self) -> None:
        """Seek the reader back to the position of every partition that skipped ahead (and
        whose last seek's records did not come within :data:`RESEEK_AFTER` seconds)."""
        now = time.monotonic()
        for number, part in self._partitions.items():
            if part.sought_at is not None and now - part.sought_at >= RESEEK_AFTER:
                part.sought_at = now
                await self._reader.seek(number, part.position)

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
        """Before partitions are given up (the batch in flight, if any, is done): commit what
        is durable, stop reading them and forget them (when a partition comes back, its
        position is read from the group again)."""
        try:
            await self.commit()
        except Exception as exc:  # the next owner starts from the last commit instead
            log.warning("intake.commit_failed", error=type(exc).__name__)
        gone = {tp.partition for tp in revoked if tp.topic == self._topic}
        for number in gone:
            self._partitions.pop(number, None)
        self._generation += 1
        await self._reader.unassign(gone)

    async def start(self) -> None:
        """The group's assignment is in place and the worker's tables are recovered: read
        every assigned partition from where the group committed (retried while the broker
        cannot answer), and stop reading any other. Left unstarted when partitions are
        revoked meanwhile: their next owner reads them."""
        assigned = {tp.partition for tp in self._assigned()}
        for number in list(self._partitions):
            if number not in assigned:  # (not revoked through on_revoked: forget it now)
                del self._partitions[number]
        await self._reader.unassign(self._reader.assigned - assigned)
        wanted = sorted(assigned - self._partitions.keys())
        if not wanted:
            return
        generation = self._generation
        group = self._app.conf.id

        def notice(exc: BaseException, _wait: float) -> None:
            log.warning("intake.start_unavailable", error=str(exc))

        starts = await retry_call_async(
            lambda: asyncio.to_thread(
                start_offsets, self._client_config, group, [(self._topic, n) for n in wanted]
            ),
            on=KafkaException,
            first=RESEEK_AFTER,
            most=RESEEK_AFTER,
            notice=notice,
        )
        if generation != self._generation:
            return
        now_assigned = {tp.partition for tp in self._assigned()}
        begun: dict[int, int] = {}
        for (_topic, number), offset in starts.items():
            if number in now_assigned and number not in self._partitions:
                self._partitions[number] = _Partition(offset, offset, offset)
                begun[number] = offset
                log.info("intake.partition_start", partition=number, offset=offset)
        await self._reader.assign(begun)

    # -- keeping the order --------------------------------------------------------------

    def settled(self) -> bool:
        """No rebalance or table recovery under way."""
        app = self._app
        return not (getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))

    def _assigned(self) -> list[TP]:
        try:
            return [tp for tp in self._app.consumer.assignment() if tp.topic == self._topic]
        except Exception:  # no consumer yet
            return []

    async def watch(self) -> None:
        """Seek back partitions that are behind their end without moving for
        :data:`STALL_AFTER` seconds (a fetch that never came)."""
        if self._in_flight:  # busy with a batch (a database outage, say)
            return
        now = time.monotonic()
        idle = [
            number
            for number, part in self._partitions.items()
            if part.sought_at is None and now - part.moved_at >= STALL_AFTER
        ]
        if not idle:
            return
        generation = self._generation
        try:
            ends = await asyncio.to_thread(
                end_offsets, self._client_config, [(self._topic, number) for number in idle]
            )
        except KafkaException as exc:
            log.warning("intake.ends_unavailable", error=str(exc))
            return
        if generation != self._generation:  # partitions moved meanwhile: look again later
            return
        for number in idle:
            part = self._partitions.get(number)
            if part is None:
                continue
            part.moved_at = now
            end = ends.get((self._topic, number), 0)
            if end <= part.position:
                continue  # at its end: nothing to wait for
            log.warning(
                "intake.partition_stalled", partition=number, position=part.position, end=end
            )
            await self._reader.seek(number, part.position)
