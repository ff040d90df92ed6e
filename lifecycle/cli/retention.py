"""``lifecycle retention sweep``: ask the workers to shred what outlived its retention."""

from __future__ import annotations

from datetime import datetime

import click

from core.instants import INSTANT
from core.settings import load_settings
from lifecycle.cli.base import bus
from lifecycle.runtime import Runtime


@click.group()
def retention() -> None:
    """Retention of data."""


@retention.command("sweep")
@click.option(
    "--as-of",
    type=INSTANT,
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
