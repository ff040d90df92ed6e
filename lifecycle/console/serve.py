"""Serving the console beside the pipeline, from a thread of ``lifecycle up --console``."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

import click
import uvicorn

from lifecycle.console.app import create_app, open_console
from lifecycle.console.settings import load_console_settings
from lifecycle.console.web import Console
from lifecycle.runtime import Runtime

DEMO_OFFICER = "officer"


@dataclass
class ConsoleBeside:
    """The console served from a thread of ``lifecycle up``, until :meth:`stop`."""

    server: uvicorn.Server
    thread: threading.Thread
    services: Console

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.services.close()


def start_beside(
    runtime: Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_filed: Callable[[str], None] = lambda _request_id: None,
) -> ConsoleBeside:
    """Serve the console in a thread of this process (``lifecycle up --demo --console``).

    On first run (no user yet) adds ``officer``, a privacy officer with a random password,
    and prints the address and that password once, on the terminal only (never a log line).
    """
    services = open_console(runtime, load_console_settings(runtime.settings), on_filed=on_filed)
    url = f"http://{host}:{port}/"
    if services.users.is_empty():
        password = secrets.token_urlsafe(12)
        services.users.add(DEMO_OFFICER, "privacy_officer", password)
        click.echo(
            f"\n  Console: {url}\n  Sign in as {DEMO_OFFICER!r} with password {password}\n"
            "  (shown this once; add others: lifecycle console user add NAME --role ROLE)\n",
            err=True,
        )
    else:
        click.echo(f"\n  Console: {url} (sign in as one of its users)\n", err=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services), host=host, port=port, log_config=None, access_log=False
        )
    )
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    return ConsoleBeside(server, thread, services)


__all__ = ["DEMO_OFFICER", "ConsoleBeside", "start_beside"]
