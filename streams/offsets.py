"""The end offset of a partition, as a fetch sees it.

Kafka answers "where does this partition end" two ways: ListOffsets(latest) and the high
watermark in every fetch response. Apache Kafka gives the same number both ways. The embedded
broker (tansu) does not: its ListOffsets answer is the base offset of the partition's last
record batch + 1, so after one produce request of many records it says 1 while a fetch says
how many there are (see docs/ on guarantees and limits). Anything that stops reading
"at the end" (Faust's table recovery, the confirmation reader's starting point, audit replay
with ``--follow``) would stop short by up to a batch.

:func:`end_offsets` asks ListOffsets first, then reads forward from one offset before that
answer until the fetch reports end of partition; on Apache Kafka that costs one small fetch per
partition, on the embedded broker it finds the true end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from core.logging import librdkafka_logger

TopicPart = tuple[str, int]


def end_offsets(
    client_config: Mapping[str, str], partitions: Iterable[TopicPart], *, timeout: float = 15.0
) -> dict[TopicPart, int]:
    """``(topic, partition) -> offset after its last record`` for every partition asked.

    Uses a consumer of its own, without a group (nothing is committed). Raises
    :class:`KafkaException` when the broker cannot be reached within ``timeout``.
    """
    wanted = list(dict.fromkeys(partitions))
    if not wanted:
        return {}
    consumer = Consumer(
        {
            **client_config,
            "group.id": f"lifecycle-ends-{uuid.uuid4()}",
            "logger": librdkafka_logger(),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        return read_to_ends(consumer, wanted, timeout)
    finally:
        consumer.close()


def read_to_ends(
    consumer: Consumer, wanted: list[TopicPart], timeout: float = 15.0
) -> dict[TopicPart, int]:
    """:func:`end_offsets` with a consumer of the caller's (``enable.partition.eof`` on), which
    is left assigned where it stopped; the caller assigns it where it wants to read next."""
    deadline = time.monotonic() + timeout
    listed: dict[TopicPart, int] = {}
    starts: list[TopicPartition] = []
    for topic, partition in wanted:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=max(1.0, deadline - time.monotonic())
        )
        listed[(topic, partition)] = high
        starts.append(TopicPartition(topic, partition, max(low, high - 1)))
    ends = dict(listed)  # never less than ListOffsets said
    pending = {(tp.topic, tp.partition) for tp in starts}
    consumer.assign(starts)
    while pending and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        key = (message.topic() or "", message.partition() or 0)
        error = message.error()
        if error is None:
            ends[key] = max(ends[key], (message.offset() or 0) + 1)
        elif error.code() == KafkaError._PARTITION_EOF:
            ends[key] = max(ends[key], message.offset() or 0)
            pending.discard(key)
        elif error.fatal():
            raise KafkaException(error)
    if pending:
        raise KafkaException(
            KafkaError(
                KafkaError._TIMED_OUT,
                f"no end of partition within {timeout:g}s for {sorted(pending)}",
            )
        )
    return ends


def start_offsets(
    client_config: Mapping[str, str],
    group: str,
    partitions: Iterable[TopicPart],
    *,
    timeout: float = 15.0,
) -> dict[TopicPart, int]:
    """``(topic, partition) -> offset`` a member of consumer group ``group`` starts reading
    at: the group's committed offset, or the partition's first offset when it has none.

    Asks the group coordinator (OffsetFetch) without joining the group. Raises
    :class:`KafkaException` when the broker cannot be reached within ``timeout``.
    """
    wanted = [TopicPartition(topic, partition) for topic, partition in dict.fromkeys(partitions)]
    if not wanted:
        return {}
    consumer = Consumer(
        {
            **client_config,
            "group.id": group,
            "enable.auto.commit": False,
            "logger": librdkafka_logger(),
        }
    )
    try:
        starts: dict[TopicPart, int] = {}
        for found in consumer.committed(wanted, timeout=timeout):
            if found.error is not None:
                raise KafkaException(found.error)
            key = (found.topic, found.partition)
            if found.offset >= 0:
                starts[key] = found.offset
            else:  # nothing committed yet: the log's start (auto.offset.reset=earliest)
                low, _high = consumer.get_watermark_offsets(found, timeout=timeout)
                starts[key] = max(low, 0)
        return starts
    finally:
        consumer.close()
