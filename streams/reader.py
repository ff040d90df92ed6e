"""The one reader of a topic's records from a start to the end (or on past it, following).

A :class:`TopicReader` reads some or all partitions of a topic without joining a consumer
group (nothing is committed), from each partition's first record or from its end as a fetch
sees it (:mod:`streams.offsets`: the embedded broker's ListOffsets answer can be short). Its
:meth:`~TopicReader.messages` end when every partition has reached its end, or, following,
when ``stop()`` says so or ``within`` seconds have passed. A fatal client error is raised;
others (a broker restarting, say) are passed over while librdkafka reconnects.

Used by the command line's tails and confirmations, ``audit replay``, and the tools that read
a one-partition topic whole (``keys reshred``, ``audit recover``), and by every process's
key-revocation listener.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from streams import clients
from streams.clients import ClientConfig
from streams.exceptions import BrokerError
from streams.offsets import read_to_ends

Start = Literal["first", "end"] | Mapping[int, int]
"""Each partition's first record, its end, or the offsets given (librdkafka's logical offsets,
such as ``OFFSET_BEGINNING``, included)."""
POLL = 0.2
"""Seconds a read waits for records before it looks at ``stop`` and ``within`` again."""


class TopicReader:
    """Reads ``topic`` (its ``partitions``, or all) from ``start``; see the module docstring.

    Raises :class:`~streams.exceptions.BrokerError` when the topic does not exist, and
    :class:`KafkaException` when the broker cannot say where its partitions start or end.
    """

    def __init__(
        self,
        client_config: ClientConfig,
        topic: str,
        *,
        start: Start = "first",
        partitions: Sequence[int] | None = None,
        label: str = "reader",
        batch: int = 500,
    ) -> None:
        self.topic = topic
        self._batch = batch
        self._consumer = clients.consumer(client_config, label=label, until_end=True)
        try:
            self.partitions = list(partitions) if partitions is not None else self._listed()
            self.starts, empty = self._starts(start)
        except BaseException:
            self._consumer.close()
            raise
        self._pending = set(self.partitions) - empty
        """Partitions whose end has not been reached yet (an empty one has nothing to read)."""
        self._consumer.assign(
            [TopicPartition(topic, number, at) for number, at in self.starts.items()]
        )

    def _listed(self) -> list[int]:
        metadata = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise BrokerError(
                f"topic {self.topic} does not exist (lifecycle topics apply creates it)"
            )
        return sorted(metadata.partitions)

    def _starts(self, start: Start) -> tuple[dict[int, int], set[int]]:
        """Each partition's first offset to read, and the partitions with nothing to read."""
        if not isinstance(start, str):
            return {number: start[number] for number in self.partitions}, set()
        if start == "end":  # found with this consumer (not a second one)
            wanted = [(self.topic, number) for number in self.partitions]
            ends = read_to_ends(self._consumer, wanted)
            return {number: ends[(self.topic, number)] for number in self.partitions}, set()
        starts: dict[int, int] = {}
        empty: set[int] = set()
        for number in self.partitions:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, number), timeout=10
            )
            starts[number] = low
            if high <= low:
                empty.add(number)
        return starts, empty

    def messages(
        self,
        *,
        follow: bool = False,
        stop: Callable[[], bool] = lambda: False,
        within: float | None = None,
    ) -> Iterator[Message]:
        """The records, in each partition's order; the consumer is closed when this ends."""
        deadline = None if within is None else time.monotonic() + within
        try:
            if not self._pending and not follow:
                return
            while not stop() and (deadline is None or time.monotonic() < deadline):
                for message in self._consumer.consume(self._batch, POLL):
                    error = message.error()
                    if error is None:
                        yield message
                    elif error.code() == KafkaError._PARTITION_EOF:
                        self._pending.discard(message.partition() or 0)
                        if not self._pending and not follow:
                            return
                    elif error.fatal():
                        raise KafkaException(error)
        finally:
            self._consumer.close()

    def fetched_end(self, partition: int) -> int:
        """The end of ``partition`` as the last fetch reported it (no request to the broker)."""
        _low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), cached=True
        )
        return int(high)

    def close(self) -> None:
        """Close the consumer without reading (when :meth:`messages` is never iterated)."""
        self._consumer.close()
