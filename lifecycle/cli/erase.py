"""``lifecycle erase`` and ``lifecycle confirmations``: the privacy team files erasure requests
and reads their confirmations."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import click

from core.settings import load_settings
from lifecycle.cli.base import bus, json_line
from lifecycle.runtime import Runtime
from schemas.kinds import DELETION_REQUESTED
from streams.codec import Codec
from streams.reader import Start, TopicReader
from streams.topics import CONFIRMATIONS

EXIT_NO_CONFIRMATION = 3


def confirmations_of(
    reader: TopicReader, codec: Codec, *, follow: bool, within: float | None = None
) -> Iterator[dict[str, Any]]:
    """The confirmations ``reader`` reads from privacy.deletion-confirmations, decoded."""
    for message in reader.messages(follow=follow, within=within):
        yield codec.decode("lifecycle.DeletionConfirmation", message.value() or b"", CONFIRMATIONS)


def _reader(client_config: dict[str, str], start: Start) -> TopicReader:
    return TopicReader(client_config, CONFIRMATIONS, start=start, partitions=[0], label="cli")


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

    request_id = request_id or f"REQ-{uuid.uuid4()}"
    with bus(load_settings()) as live:
        runtime = Runtime(live).open()
        # listen from the end before publishing, so the answer cannot slip past
        reader = _reader(live.kafka_consumer_config(), "end") if wait else None
        event: dict[str, object] = {
            "kind": DELETION_REQUESTED,
            "source": "privacy-team",
            "subject_id": subject_id,
            "actor": {"id": "lifecycle-cli", "role": "privacy_officer"},
            "request_id": request_id,
        }
        if categories:
            event["categories"] = list(categories)
        publisher = runtime.publisher()
        publisher.publish(event)
        publisher.close()
        click.echo(f"erasure requested: {request_id}", err=True)
        if reader is None:
            return
        for confirmation in confirmations_of(reader, runtime.codec, follow=True, within=timeout):
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
        reader = _reader(live.kafka_consumer_config(), "first")
        for record in confirmations_of(reader, runtime.codec, follow=follow):
            click.echo(json_line(record))
