"""``lifecycle publish``: JSON-lines events onto the bus, through the publisher."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from core.settings import load_settings
from lifecycle.cli.base import EXIT_ERROR, bus
from lifecycle.runtime import Runtime

EXIT_REFUSED_LINES = 1


@click.command()
@click.argument("source", type=click.File("rb"))
def publish(source: BinaryIO) -> None:
    """Publish JSON-lines events from SOURCE (a file, or - for stdin)."""
    from streams.exceptions import PublishError
    from streams.publisher import PublishReport

    settings = load_settings()
    report = PublishReport()
    with bus(settings) as live:
        runtime = Runtime(live).open()
        publisher = runtime.publisher(delivery_timeout_ms=settings.publish_timeout_ms)
        try:
            report = publisher.publish_lines(source, flush=False)
            publisher.flush()
        except PublishError as exc:
            for error in report.errors:
                click.echo(str(error), err=True)
            click.echo(f"error: publishing failed: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        finally:
            publisher.close()
    for error in report.errors:
        click.echo(str(error), err=True)
    click.echo(f"published {report.published}, refused {len(report.errors)}", err=True)
    if report.errors:
        sys.exit(EXIT_REFUSED_LINES)
