"""The ``lifecycle`` command line: this module only gathers the commands.

Each command group lives in a module of its own on the shared :mod:`lifecycle.cli.base`;
none imports this one back.
"""

from __future__ import annotations

import sys

import click

from core.errors import LifecycleError
from core.logging import configure_logging
from lifecycle.cli.audit import audit
from lifecycle.cli.base import EXIT_ERROR
from lifecycle.cli.erase import confirmations, erase
from lifecycle.cli.events import events
from lifecycle.cli.keys import keys
from lifecycle.cli.policy import policy
from lifecycle.cli.publish import publish
from lifecycle.cli.retention import retention
from lifecycle.cli.subject import subject
from lifecycle.cli.topics import topics
from lifecycle.cli.up import up


@click.group()
@click.option("--log-level", default="INFO", show_default=True, envvar="LIFECYCLE_LOG_LEVEL")
def cli(log_level: str) -> None:
    """Customer-data privacy policy, enforced on Kafka."""
    configure_logging(log_level.upper())


for _command in (
    up,
    publish,
    erase,
    confirmations,
    subject,
    audit,
    retention,
    events,
    policy,
    topics,
    keys,
):
    cli.add_command(_command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except LifecycleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


__all__ = ["cli", "main"]
