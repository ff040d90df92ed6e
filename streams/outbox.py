"""Where a stage's outputs go: a confluent-kafka producer, flushed once per batch.

Faust's own ``topic.send`` runs much Python per record (futures, its producer buffer,
aiokafka's sender); librdkafka queues a record in C. A stage
produces its batch's records here, then :meth:`Outbox.flush` waits (in a thread, so the event
loop keeps running) for every delivery report and raises if the broker refused any: only then
may the stage acknowledge its input.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, Message

from streams import clients
from streams.clients import Headers
from streams.exceptions import PublishError


class Outbox:
    """An idempotent, ``acks=all`` producer whose failures surface at :meth:`flush`."""

    def __init__(self, client_config: dict[str, str]) -> None:
        self._producer = clients.producer(client_config)
        self._failed: list[str] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
        *,
        partition: int = -1,
    ) -> None:
        """Queue a record; ``partition`` -1 lets the producer's partitioner choose."""
        clients.produce(
            self._producer,
            topic,
            value,
            key,
            partition=partition,
            headers=headers,
            on_delivery=self._on_delivery,
            serve=False,  # the batch's flush serves every delivery
        )

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._failed.append(error.str())

    def flush_now(self, timeout: float = 120.0) -> None:
        """Wait for every delivery report; :class:`PublishError` if any record was refused."""
        remaining = self._producer.flush(timeout)
        failed, self._failed = self._failed, []
        if remaining:
            raise PublishError(f"{remaining} records not acknowledged within {timeout:.0f}s")
        if failed:
            raise PublishError(f"{len(failed)} records refused by the broker: {failed[0]}")

    async def flush(self, timeout: float = 120.0) -> None:
        await asyncio.to_thread(self.flush_now, timeout)
