"""``lifecycle erase`` and ``lifecycle confirmations``: the privacy team files erasure requests
and reads their confirmations."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import click
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from core.logging import librdkafka_logger
from core.settings import load_settings
from lifecycle.cli.base import bus, json_line
from lifecycle.runtime import Runtime
from streams.codec import Codec
from streams.offsets import read_to_ends
from streams.topics import CONFIRMATIONS

EXIT_NO_CONFIRMATION = 3


class ConfirmationReader:
    """Reads privacy.deletion-confirmations from the beginning, or from its current end (the
    end offset is fixed when the reader is made, so nothing published after that is missed)."""

    def __init__(self, client_config: dict[str, str], codec: Codec, *, from_end: bool) -> None:
        self._codec = codec
        self._consumer = Consumer(
            {
                **client_config,
                "group.id": f"lifecycle-cli-{uuid.uuid4()}",
                "logger": librdkafka_logger(),
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        start = OFFSET_BEGINNING
        if from_end:  # found with this consumer (not a second one)
            start = read_to_ends(self._consumer, [(CONFIRMATIONS, 0)])[(CONFIRMATIONS, 0)]
        self._consumer.assign([TopicPartition(CONFIRMATIONS, 0, start)])

    def read(self, *, follow: bool, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while deadline is None or time.monotonic() < deadline:
                message = self._consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and not follow:
                        return
                    continue
                yield self._codec.decode(
                    "lifecycle.DeletionConfirmation", message.value() or b"", CONFIRMATIONS
                )
        finally:
            self._consumer.close()


@click.command()
@click.argument("subject_id")
@click.option("--categories", multiple=True, help="erase only these categories (repeatable)")
@click.option("--request-id", default=None, help="default: a new REQ-... id")
@click.option("--wait", is_flag=True, help="return when the confirmation arrives, and print it")
@click.option("--timeout", default=120.0, show_default=True, help="seconds --wait waits")
def erase(
    subject_id: str, categories: tuple[str, ...], request_id: str | None, wait: bool, timeout: float
) -> None:
    """File an erasure request for SUBJECT_ID (crypto-shredding)."""
    from streams.publisher import Publisher

    request_id = request_id or f"REQ-{uuid.uuid4()}"
    with bus(load_settings()) as live:
        runtime = Runtime(live).open()
        config = live.kafka_client_config()
        # listen from the end before publishing, so the answer cannot slip past
        reader = (
            ConfirmationReader(live.kafka_consumer_config(), runtime.codec, from_end=True)
            if wait
            else None
        )
        event: dict[str, object] = {
            "kind": "deletion_requested",
            "source": "privacy-team",
            "subject_id": subject_id,
            "actor": {"id": "lifecycle-cli", "role": "privacy_officer"},
            "request_id": request_id,
        }
        if categories:
            event["categories"] = list(categories)
        publisher = Publisher(config, runtime.keystore, runtime.codec, runtime.policy.vocabulary())
        publisher.publish(event)
        publisher.close()
        click.echo(f"erasure requested: {request_id}", err=True)
        if reader is None:
            return
        for confirmation in reader.read(follow=True, timeout=timeout):
            if confirmation["request_id"] == request_id:
                click.echo(json_line(confirmation))
                return
    click.echo(f"no confirmation for {request_id} within {timeout:.0f}s", err=True)
    sys.exit(EXIT_NO_CONFIRMATION)


@click.command()
@click.option("--follow", is_flag=True, help="keep reading new confirmations")
def confirmations(follow: bool) -> None:
    """Read privacy.deletion-confirmations (one JSON object a line)."""
    with bus(load_settings()) as live:
        runtime = Runtime(live)
        reader = ConfirmationReader(live.kafka_consumer_config(), runtime.codec, from_end=False)
        for record in reader.read(follow=follow):
            click.echo(json_line(record))
