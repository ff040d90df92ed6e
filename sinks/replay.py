"""``lifecycle audit replay``: read ``privacy.audit`` and check the hash chain as it goes.

The topic is at-least-once (a record is published again when the ledger stage redoes a batch
after a crash) and, with several workers, records may arrive slightly out of ``seq`` order:
:class:`~sinks.chain.ChainFollower` deduplicates by seq and reorders within a window, and the
first record that breaks the chain stops the replay, naming its seq.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from sinks.chain import ChainFollower, ChainProblem, VerifyReport
from streams.codec import Codec
from streams.exceptions import DecodeError
from streams.topics import AUDIT


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """An AuditRecord as one flat object (the decision's fields beside seq and hashes)."""
    decision = record["decision"]
    return {
        "seq": record["seq"],
        **decision,
        "recorded_at": record["recorded_at"],
        "prev_hash": record["prev_hash"],
        "hash": record["hash"],
    }


def replay(
    client_config: dict[str, str],
    codec: Codec,
    emit: Callable[[dict[str, Any]], None],
    *,
    from_beginning: bool = True,
    follow: bool = False,
    stop: Callable[[], bool] = lambda: False,
) -> VerifyReport:
    """Emit every verified record in seq order; the report when the topic's end is reached
    (or, with ``follow``, when ``stop()`` says so or the chain breaks)."""
    consumer = Consumer(
        {
            **client_config,
            "group.id": f"lifecycle-replay-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partition = TopicPartition(AUDIT, 0)
    start = OFFSET_BEGINNING
    if not from_beginning:
        _low, start = consumer.get_watermark_offsets(partition, timeout=10)
    consumer.assign([TopicPartition(AUDIT, 0, start)])
    follower = ChainFollower(anchor_on_first=not from_beginning)
    try:
        while not stop():
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and not follow:
                    break
                continue
            try:
                record = codec.decode("lifecycle.AuditRecord", message.value() or b"", AUDIT)
            except DecodeError as exc:
                follower.problem = ChainProblem(
                    follower.head_seq + 1,
                    f"privacy.audit offset {message.offset()} is not an audit record: {exc}",
                )
                break
            for verified in follower.feed(record):
                emit(flat(dict(verified)))
            if follower.problem is not None:
                break
    finally:
        consumer.close()
    return follower.finish()
