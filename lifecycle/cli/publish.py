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
@click.option(
    "--sign-from-registry",
    is_flag=True,
    help="sign each line as the registered source it names, with that source's secret read "
    "from the registry (needs the master key: for operators and the demo, not upstream systems)",
)
def publish(source: BinaryIO, sign_from_registry: bool) -> None:
    """Publish JSON-lines events from SOURCE (a file, or - for stdin), signed with the
    source secrets in LIFECYCLE_SOURCE_SECRET_FILE."""
    from streams.exceptions import PublishError
    from streams.publisher import PublishReport
    from streams.sourceauth import SourceCredentials

    settings = load_settings()
    report = PublishReport()
    with bus(settings) as live:
        runtime = Runtime(live).open()
        credentials = runtime.source_credentials
        if sign_from_registry:
            registry = runtime.sources
            credentials = SourceCredentials(
                registry.credential(registered.name) for registered in registry.sources()
            )
        if credentials is None:
            click.echo(
                "warning: LIFECYCLE_SOURCE_SECRET_FILE is not set: these events carry no "
                "source MAC, and workers refuse them (unless LIFECYCLE_AUTH_MODE=permit)",
                err=True,
            )
        publisher = runtime.publisher(
            delivery_timeout_ms=settings.publish_timeout_ms, credentials=credentials
        )
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
