"""``lifecycle publish``: JSON-lines events onto the bus, through the publisher (on several
processes for a file: :mod:`lifecycle.publish_jobs`)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from core.settings import Settings, load_settings
from lifecycle.cli.base import EXIT_ERROR, bus
from lifecycle.runtime import Runtime

if TYPE_CHECKING:
    from streams.publisher import PublishReport

EXIT_REFUSED_LINES = 1


@click.command()
@click.argument("source", type=click.File("rb"))
@click.option(
    "--sign-from-registry",
    is_flag=True,
    help="sign each line as the registered source it names, with that source's secret read "
    "from the registry (needs the master key: for operators and the demo, not upstream systems)",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="processes publishing a file, each customer's lines in one of them (default: one per "
    "core, fewer for a small file); stdin is always read by one",
)
def publish(source: BinaryIO, sign_from_registry: bool, jobs: int | None) -> None:
    """Publish JSON-lines events from SOURCE (a file, or - for stdin), signed with the
    source secrets in LIFECYCLE_SOURCE_SECRET_FILE."""
    settings = load_settings()
    path = _regular_file(source)
    if path is not None:
        jobs = jobs if jobs is not None else _auto_jobs(path)
    if path is None or jobs == 1:
        report, failure = _publish_here(settings, source, sign_from_registry)
    else:
        source.close()  # every job reads the file itself
        report, failure = _publish_in_jobs(settings, path, jobs or 1, sign_from_registry)
    if failure is not None:
        for error in report.errors:
            click.echo(str(error), err=True)
        click.echo(f"error: publishing failed: {failure}", err=True)
        sys.exit(EXIT_ERROR)
    for error in report.errors:
        click.echo(str(error), err=True)
    click.echo(f"published {report.published}, refused {len(report.errors)}", err=True)
    if report.errors:
        sys.exit(EXIT_REFUSED_LINES)


def _regular_file(source: BinaryIO) -> Path | None:
    """The path of ``source`` when it is a regular file several processes can each read
    (not stdin, a pipe or a device)."""
    name = getattr(source, "name", None)
    if not isinstance(name, str) or source is sys.stdin.buffer:
        return None
    try:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            return None
    except (OSError, ValueError):
        return None
    return Path(name)


def _auto_jobs(path: Path) -> int:
    from lifecycle.publish_jobs import auto_jobs

    return auto_jobs(path)


def _warn_unsigned(settings: Settings, sign_from_registry: bool) -> None:
    if settings.source_secret_file is None and not sign_from_registry:
        click.echo(
            "warning: LIFECYCLE_SOURCE_SECRET_FILE is not set: these events carry no "
            "source MAC, and workers refuse them (unless LIFECYCLE_AUTH_MODE=permit)",
            err=True,
        )


def _publish_here(
    settings: Settings, source: BinaryIO, sign_from_registry: bool
) -> tuple[PublishReport, str | None]:
    """Publish in this process; (report, delivery failure or None)."""
    from lifecycle.publish_jobs import file_credentials, registry_credentials, settle_collector
    from streams.exceptions import PublishError
    from streams.publisher import PublishReport

    report = PublishReport()
    with bus(settings) as live:
        runtime = Runtime(live).open()
        _warn_unsigned(live, sign_from_registry)
        credentials = (registry_credentials if sign_from_registry else file_credentials)(runtime)
        publisher = runtime.publisher(
            delivery_timeout_ms=live.publish_timeout_ms, credentials=credentials
        )
        settle_collector()
        try:
            report = publisher.publish_lines(source, flush=False)
            publisher.flush()
        except PublishError as exc:
            return report, str(exc)
        finally:
            publisher.close()
    return report, None


def _publish_in_jobs(
    settings: Settings, path: Path, jobs: int, sign_from_registry: bool
) -> tuple[PublishReport, str | None]:
    """Publish ``path`` on ``jobs`` processes; (merged report, first delivery failure)."""
    from lifecycle.publish_jobs import PublishJobs, file_credentials, registry_credentials
    from streams.exceptions import PublishError
    from streams.publisher import PublishReport

    with bus(settings) as live:
        _warn_unsigned(live, sign_from_registry)
        credentials = registry_credentials if sign_from_registry else file_credentials
        try:
            with PublishJobs(live, jobs, credentials=credentials) as running:
                outcome = running.publish_file(path)
        except PublishError as exc:  # a job ended abruptly
            return PublishReport(), str(exc)
    return outcome.report, outcome.failure
