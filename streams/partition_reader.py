"""Reads the partitions a consumer group gave someone else, in bulk, outside the group.

A Faust worker's consumer keeps the group's membership (assignment, rebalances, heartbeats,
commits), but handing each of its records through Faust's per-event machinery costs several
times what deciding the record does. A :class:`PartitionReader` is a librdkafka consumer that
joins no group: it is :meth:`~PartitionReader.assign`\\ ed exactly the partitions the group
gave the worker, at the offsets the caller names, and reads them in batches of librdkafka
messages (``consume``), which costs a few microseconds a record.

Every call to the client runs in one thread of its own, one at a time: a read waits there for
records without holding up the event loop, and an assignment, seek or removal never races a
read. A fatal client error is raised; others (a broker restarting, say) are logged and passed
over while librdkafka reconnects. Commits are not the reader's: the group member makes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from confluent_kafka import KafkaException, Message, TopicPartition

from core.logging import get_logger
from streams import clients
from streams.clients import ClientConfig

log = get_logger(__name__)

T = TypeVar("T")


class PartitionReader:
    """A group-less consumer of ``topic``'s partitions it is given (see the module)."""

    def __init__(self, client_config: ClientConfig, topic: str, *, label: str) -> None:
        self.topic = topic
        # an offset the log no longer holds: read from its first record, as the group does
        self._consumer = clients.consumer(
            {**client_config, "auto.offset.reset": "earliest"}, label=label
        )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"{label}-reader")
        self._assigned: set[int] = set()
        self._closed = False

    @property
    def assigned(self) -> frozenset[int]:
        """The partitions being read."""
        return frozenset(self._assigned)

    async def _call(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def assign(self, starts: Mapping[int, int]) -> None:
        """Read partitions ``starts`` names as well, each from the offset given."""
        fresh = {n: offset for n, offset in starts.items() if n not in self._assigned}
        if not fresh:
            return
        self._assigned.update(fresh)
        wanted = [TopicPartition(self.topic, number, offset) for number, offset in fresh.items()]
        await self._call(lambda: self._consumer.incremental_assign(wanted))

    async def unassign(self, partitions: Iterable[int]) -> None:
        """Stop reading ``partitions`` (records of them fetched already are dropped)."""
        gone = set(partitions) & self._assigned
        if not gone:
            return
        self._assigned -= gone
        removed = [TopicPartition(self.topic, number) for number in sorted(gone)]
        await self._call(lambda: self._consumer.incremental_unassign(removed))

    async def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` again from ``offset`` (records fetched beyond it are dropped)."""
        if partition not in self._assigned:
            return
        position = TopicPartition(self.topic, partition, offset)
        await self._call(lambda: self._consumer.seek(position))

    async def read(self, most: int, within: float) -> list[Message]:
        """Up to ``most`` records of the assigned partitions, each partition's in offset
        order: those fetched already, or, when there are none, those that come first within
        ``within`` seconds (as soon as one comes: a batch is never held back to fill up, it
        grows by itself while the one before it is being decided)."""
        if not self._assigned:
            return []
        return await self._call(lambda: self._read(most, within))

    def _read(self, most: int, within: float) -> list[Message]:
        consumer = self._consumer
        messages = consumer.consume(most, 0)
        if not messages:
            first = consumer.poll(within)
            if first is None:
                return []
            messages = [first, *(consumer.consume(most - 1, 0) if most > 1 else [])]
        if all(message.error() is None for message in messages):
            return messages
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.fatal():
                raise KafkaException(error)
            else:
                log.warning("reader.consume_error", topic=self.topic, error=error.str())
        return records

    def highwater(self, partition: int) -> int | None:
        """The end of ``partition`` as the latest fetch reported it (None: not known yet)."""
        if self._closed or partition not in self._assigned:
            return None
        try:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), cached=True
            )
        except KafkaException:
            return None
        return int(high) if high is not None and high >= 0 else None

    async def close(self) -> None:
        """Stop reading and release the client."""
        if self._closed:
            return
        self._closed = True
        self._assigned.clear()
        await self._call(self._consumer.close)
        self._thread.shutdown(wait=False)
