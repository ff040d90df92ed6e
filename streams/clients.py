"""Every Kafka client of the pipeline is made here, from the client configuration the settings
give (``Settings.kafka_client_config()``: bootstrap servers and security properties).

So every client logs through the one librdkafka logger (its lines come out as JSON like ours),
every consumer fetches with the pipeline's short fetch wait unless the configuration says
otherwise, and every producer keeps the same delivery guarantees. Faust's own clients are
configured in :mod:`streams.app`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from core.logging import librdkafka_logger
from core.retry import retry_call
from core.settings import FETCH_WAIT_MS

ClientConfig = Mapping[str, str]
Headers = Sequence[tuple[str, bytes]]
DeliveryReport = Callable[[KafkaError | None, Message], None]

DELIVERY_TIMEOUT_MS = 120_000
"""How long a record may wait for the broker's acknowledgement before it counts as failed."""


def producer_config(
    client_config: ClientConfig, *, delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS
) -> dict[str, Any]:
    """The producer settings every output of the pipeline uses: idempotent (no duplicates or
    reordering on retries), acknowledged by all in-sync replicas."""
    return {
        **client_config,
        "enable.idempotence": True,
        "acks": "all",
        # murmur2, like the Java client and aiokafka: a subject's events land on the partition
        # that holds its state in the workers' tables (same key bytes, same partitioner).
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": delivery_timeout_ms,
        "logger": librdkafka_logger(),
    }


def producer(
    client_config: ClientConfig, *, delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS
) -> Producer:
    """A producer with :func:`producer_config`."""
    return Producer(producer_config(client_config, delivery_timeout_ms=delivery_timeout_ms))


def produce(
    to: Producer,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    *,
    partition: int = -1,
    headers: Headers | None = None,
    on_delivery: DeliveryReport | None = None,
    serve: bool = True,
) -> None:
    """Queue one record (``partition`` -1: the partitioner chooses); while the local queue is
    full, serve deliveries until it has room. ``serve``: serve the deliveries already
    reported (a caller that flushes once per batch leaves them to the flush)."""
    listed: list[tuple[str, str | bytes | None]] | None = list(headers) if headers else None
    try:
        to.produce(topic, value, key, partition, headers=listed, on_delivery=on_delivery)
    except BufferError:
        retry_call(
            lambda: to.produce(
                topic, value, key, partition, headers=listed, on_delivery=on_delivery
            ),
            on=BufferError,
            first=0.05,
            most=0.05,
            sleep=to.poll,
        )
    if serve:
        to.poll(0)


def consumer(
    client_config: ClientConfig,
    *,
    group: str | None = None,
    label: str = "reader",
    until_end: bool = False,
    **settings: str | int | bool,
) -> Consumer:
    """A consumer that commits nothing by itself.

    ``group``: the consumer group it joins (``subscribe``) or whose offsets it reads; without
    one it gets a throw-away group id named after ``label`` and is only ever assigned
    partitions. ``until_end``: it reports reaching the end of each partition (for readers that
    stop there). ``settings``: further librdkafka properties.
    """
    return Consumer(
        {
            "fetch.wait.max.ms": str(FETCH_WAIT_MS),  # unless client_config says
            **client_config,
            "group.id": group or f"lifecycle-{label}-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": until_end,
            "logger": librdkafka_logger(),
            **settings,
        }
    )


def admin(client_config: ClientConfig) -> AdminClient:
    """An admin client (topics, configs, metadata)."""
    config: dict[str, Any] = {**client_config, "logger": librdkafka_logger()}
    return AdminClient(config)
