"""``lifecycle console``: serve the privacy team's web console, and manage who signs in to it.

* ``lifecycle console [--host 127.0.0.1] [--port 8080]``: serve it (loopback by default; in
  production behind a TLS-terminating proxy, see docs/console.md).
* ``lifecycle console user add NAME --role ROLE``: the password is read from standard input
  (one line), or prompted twice on a terminal.
* ``lifecycle console user list`` and ``user remove NAME``.

``lifecycle up --demo --console`` runs the console beside the demo pipeline
(:func:`lifecycle.console.serve.start_beside`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from core.clock import SystemClock
from core.logging import get_logger
from core.settings import load_settings
from lifecycle.runtime import Runtime
from processors.requests import CONSOLE_ROLES

if TYPE_CHECKING:
    from lifecycle.console.users import UserStore

log = get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@click.group(invoke_without_command=True)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="address to listen on")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.pass_context
def console(ctx: click.Context, host: str, port: int) -> None:
    """The privacy team's web console (needs KAFKA_BOOTSTRAP, like the workers)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from lifecycle.cli.base import bus
    from lifecycle.console import create_app, load_console_settings, open_console

    with bus(load_settings()) as live:
        services = open_console(Runtime(live), load_console_settings(live))
        if services.users.is_empty():
            click.echo(
                "no console user yet: add one with "
                "`lifecycle console user add NAME --role privacy_officer`",
                err=True,
            )
        app = create_app(services)
        log.info("console.listening", url=f"http://{host}:{port}/")
        try:
            uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=True)
        finally:
            services.close()


def _store() -> UserStore:
    from core.db import make_engine
    from lifecycle.console.users import UserStore

    settings = load_settings()
    return UserStore(make_engine(settings.db_url), SystemClock())


@console.group()
def user() -> None:
    """Who may sign in to the console."""


@user.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(CONSOLE_ROLES))
def user_add(name: str, role: str) -> None:
    """Add NAME with ROLE; the password comes from standard input (or a prompt)."""
    from lifecycle.console.users import UserError

    if sys.stdin.isatty():
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    store = _store()
    try:
        added = store.add(name, role, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"added {added.name} ({added.role})", err=True)


@user.command("list")
def user_list() -> None:
    """Every user: name, role, when added."""
    store = _store()
    for found in store.list():
        click.echo(f"{found.name}\t{found.role}\t{found.added_at}")


@user.command("remove")
@click.argument("name")
def user_remove(name: str) -> None:
    """Remove NAME (their sessions end with their next request)."""
    store = _store()
    if not store.remove(name):
        raise click.ClickException(f"no user {name!r}")
    click.echo(f"removed {name}", err=True)


__all__ = ["console"]
