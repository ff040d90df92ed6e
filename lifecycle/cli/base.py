"""What every command shares: the bus it talks to, exit statuses, error output, and the officer
a request is filed for (with the command line's own source secret)."""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import orjson
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from core.db import make_engine
from core.logging import get_logger
from core.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from lifecycle.runtime import Runtime
    from streams.sourceauth import SourceCredential

EXIT_ERROR = 2
"""Something is wrong with the input or the environment (the message names it)."""
_OFFICER_LIMIT = 128

EXIT_TAMPERED = 1
"""What was checked (a ledger, a bundle, a receipt, privacy.audit) was changed: the message
names the first place."""


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


@contextlib.contextmanager
def ledger_engine(settings: Settings) -> Iterator[Engine]:
    """The ledger's engine; refuses to conjure an empty SQLite file where none is."""
    url = make_url(settings.db_url)
    database = url.database if url.get_backend_name() == "sqlite" else None
    if database not in (None, "", ":memory:") and not Path(str(database)).exists():
        fail(f"no audit ledger at {url.database} (set LIFECYCLE_DB_URL or LIFECYCLE_DATA_DIR)")
    engine = make_engine(settings.db_url)
    try:
        yield engine
    finally:
        engine.dispose()


def load_public_keys(paths: tuple[Path, ...]) -> dict[str, Ed25519PublicKey]:
    """The ledger's Ed25519 public keys (PEM files) by key id."""
    from sinks.checkpoints import key_id_of, load_public_key

    keys = [load_public_key(path) for path in paths]
    return {key_id_of(key): key for key in keys}


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


OFFICER_OPTION = click.option(
    "--officer",
    envvar="LIFECYCLE_OFFICER",
    default=None,
    help="the privacy officer this request is filed for (default: LIFECYCLE_OFFICER, else "
    "your login name); recorded as the request's actor",
)


def officer_name(given: str | None) -> str:
    """The person a command acts for: ``--officer`` / ``LIFECYCLE_OFFICER``, else the login
    name. It becomes the request's actor id (on the bus and in the ledger)."""
    name = given
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no login name in this container
            name = ""
    name = (name or "").strip()
    if not name:
        raise click.UsageError("name the officer: --officer NAME or LIFECYCLE_OFFICER")
    if len(name) > _OFFICER_LIMIT or not name.isprintable():
        raise click.UsageError(
            f"--officer must be printable and at most {_OFFICER_LIMIT} characters"
        )
    return name


def cli_credential(runtime: Runtime) -> SourceCredential:
    """The command line's own source secret, read from the registry with the master key (the
    source ``cli`` is registered on first use)."""
    credential = runtime.sources.ensure_builtin("cli")
    if credential is None:
        raise click.UsageError(
            "the source cli was removed, so the command line cannot file requests: register "
            "it again (lifecycle sources add cli --roles privacy_officer,system "
            "--destructive all)"
        )
    return credential
