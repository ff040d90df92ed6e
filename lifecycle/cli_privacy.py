"""The privacy team's commands: erase, confirmations, subject report, retention sweep."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from lifecycle.cli import bus
from lifecycle.config import load_settings
from lifecycle.logging import librdkafka_logger
from lifecycle.runtime import Runtime
from streams.codec import Codec
from streams.offsets import read_to_ends
from streams.topics import CONFIRMATIONS


class Instant(click.ParamType):
    """An ISO-8601 date or date-time, with a zone or without (then UTC): an aware datetime."""

    name = "ISO-8601 time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        try:
            parsed = (
                value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
            )
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO-8601 date or time "
                "(e.g. 2033-01-01, 2033-01-01T09:30:00 in UTC, or 2033-01-01T09:30:00+04:00)",
                param,
                ctx,
            )
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json(record: dict[str, object]) -> str:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()


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
    from processors.rules import RefusalScreen
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
        publisher = Publisher(
            config,
            runtime.keystore,
            runtime.codec,
            runtime.policy.vocabulary(),
            screen=RefusalScreen(runtime.policy),
        )
        publisher.publish(event)
        publisher.close()
        click.echo(f"erasure requested: {request_id}", err=True)
        if reader is None:
            return
        for confirmation in reader.read(follow=True, timeout=timeout):
            if confirmation["request_id"] == request_id:
                click.echo(_json(confirmation))
                return
    click.echo(f"no confirmation for {request_id} within {timeout:.0f}s", err=True)
    sys.exit(3)


@click.command()
@click.option("--follow", is_flag=True, help="keep reading new confirmations")
def confirmations(follow: bool) -> None:
    """Read privacy.deletion-confirmations (one JSON object a line)."""
    with bus(load_settings()) as live:
        runtime = Runtime(live)
        reader = ConfirmationReader(live.kafka_consumer_config(), runtime.codec, from_end=False)
        for record in reader.read(follow=follow):
            click.echo(_json(record))


@click.group()
def subject() -> None:
    """Customers' access requests."""


@subject.command("report")
@click.argument("subject_id")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--role",
    default="privacy_officer",
    show_default=True,
    help="who reads: values are decrypted only for privacy_officer",
)
def subject_report_command(subject_id: str, as_json: bool, role: str) -> None:
    """What is held, used, shared and erased for SUBJECT_ID."""
    from sinks.report import subject_report

    runtime = Runtime(load_settings())
    in_force = runtime.policy.in_force(datetime.now(UTC))  # its consent defaults apply today
    report = subject_report(
        runtime.engine, runtime.keystore, subject_id, role=role, policy=in_force
    )
    click.echo(_json(report.to_dict()) if as_json else report.render())


@click.group()
def retention() -> None:
    """Retention of data."""


@retention.command("sweep")
@click.option(
    "--as-of",
    type=Instant(),
    default=None,
    help="judge as of this ISO-8601 date or time (with a zone, or UTC); default now",
)
def retention_sweep(as_of: datetime | None) -> None:
    """Ask the workers to shred data whose retention period ran out."""
    from processors.retention import request_sweep

    with bus(load_settings()) as live:
        runtime = Runtime(live)
        sweep_id = request_sweep(
            live.kafka_client_config(), runtime.codec, live.topic_partitions, as_of
        )
    click.echo(sweep_id)


COMMANDS = (erase, confirmations, subject, retention)
