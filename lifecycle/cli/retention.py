"""``lifecycle retention sweep``: ask the workers to shred what outlived its retention."""

from __future__ import annotations

from datetime import datetime

import click

from core.instants import INSTANT
from core.settings import load_settings
from lifecycle.cli.base import OFFICER_OPTION, bus, cli_credential, officer_name
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
@OFFICER_OPTION
def retention_sweep(as_of: datetime | None, officer: str | None) -> None:
    """Ask the workers to shred data whose retention period ran out (signed as the built-in
    source ``cli``, for the named officer)."""
    from processors.retention import request_sweep

    requested_by = officer_name(officer)
    with bus(load_settings()) as live:
        runtime = Runtime(live)
        sweep_id = request_sweep(
            live.kafka_client_config(),
            runtime.codec,
            live.topic_partitions,
            as_of,
            credential=cli_credential(runtime),
            requested_by=requested_by,
        )
    click.echo(sweep_id)
