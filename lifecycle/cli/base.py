"""What every command shares: the bus it talks to, exit statuses, and error output."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click
import orjson

from core.logging import get_logger
from core.settings import Settings

EXIT_ERROR = 2
"""Something is wrong with the input or the environment (the message names it)."""


@contextlib.contextmanager
def bus(settings: Settings, *, start_embedded: bool = False) -> Iterator[Settings]:
    """Settings with a reachable broker: the configured cluster, or (only for ``up``) a fresh
    embedded broker that stops when the block ends."""
    if not settings.embedded:
        yield settings
        return
    if not start_embedded:
        raise click.UsageError(
            "KAFKA_BOOTSTRAP is not set: export the address `lifecycle up` printed "
            "(or your cluster's bootstrap servers)"
        )
    from streams.broker import EmbeddedBroker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_file=settings.data_dir / "broker.log") as broker:  # TANSU_BIN
        # a log line, not a bare print: off a terminal every line of a worker is JSON
        get_logger(__name__).info(
            "broker.embedded",
            bootstrap=broker.bootstrap,
            storage="memory",
            hint=f"in another shell: export KAFKA_BOOTSTRAP={broker.bootstrap}",
        )
        os.environ["KAFKA_BOOTSTRAP"] = broker.bootstrap
        yield settings.with_bootstrap(broker.bootstrap)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with :data:`EXIT_ERROR`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def json_line(record: dict[str, object]) -> str:
    """One record as a JSON line, keys sorted."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()


F = TypeVar("F", bound=Callable[..., Any])


def reading_options(follow_help: str) -> Callable[[F], F]:
    """``--from-beginning`` and ``--follow`` for a command that reads a topic."""

    def decorate(command: F) -> F:
        command = click.option("--follow", is_flag=True, help=follow_help)(command)
        return click.option(
            "--from-beginning",
            is_flag=True,
            help="from the first record (the default unless --follow alone is given, which "
            "starts at the live end)",
        )(command)

    return decorate
