"""What every page of the console shares: the services it reads and writes through, signed-in
users, CSRF tokens, templates, and the answers to a request that may not go on.

Sessions are Starlette's signed cookies (itsdangerous), ``SameSite=Strict``, HTTP-only, ending
after ``session_minutes`` without a request and ``session_max_hours`` after signing in; they
hold the user's name, the time of signing in and the CSRF token, nothing else. The user's role
is read from the database on every request, so removing a user ends their sessions.

Every unsafe request (POST) carries the session's CSRF token, in the form (``csrf_token``) or
in the ``X-CSRF-Token`` header (htmx sends it): without it, or with another, it is refused
(403) before any handler runs. The sign-in form has one too (a token of the anonymous session).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from core.logging import get_logger
from lifecycle.console.bus import ConfirmationWatcher, ErasureFiler
from lifecycle.console.settings import ConsoleSettings
from lifecycle.console.users import User, UserStore
from lifecycle.runtime import Runtime
from processors.policy import Policy
from processors.requests import LedgerRecorder, Staff
from sinks.ledger import audit_ledger

log = get_logger(__name__)

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass
class Console:
    """The services behind the pages (one per process)."""

    runtime: Runtime
    settings: ConsoleSettings
    users: UserStore
    recorder: LedgerRecorder
    confirmations: ConfirmationWatcher
    filer: ErasureFiler
    clock: Callable[[], datetime]
    recent: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Requests this console filed, by id, until the ledger has them (a few seconds)."""

    def policy_now(self) -> Policy:
        return self.runtime.policy.in_force(self.clock())

    def staff(self, user: User) -> Staff:
        return Staff(user.name, user.role, "console")

    def wait_for_ledger(self, event_id: str, timeout: float = 8.0) -> int | None:
        """The seq of ``event_id``'s record once a worker has appended it (None on timeout:
        the record is safe on ``privacy.decisions`` and lands when a worker runs)."""
        deadline = time.monotonic() + timeout
        statement = select(audit_ledger.c.seq).where(audit_ledger.c.event_id == event_id)
        while True:
            with self.runtime.engine.connect() as conn:
                seq = conn.execute(statement).scalar()
            if seq is not None:
                return int(seq)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def close(self) -> None:
        self.confirmations.stop()
        self.filer.close()
        self.recorder.close()


class NotSignedIn(Exception):
    """No valid session: sign in first."""


class Refused(Exception):
    """The request may not go on (``status`` 403 or 400), with a reason to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (also for the anonymous sign-in page)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def start_session(request: Request, user: User, now: datetime) -> None:
    """A fresh session for ``user`` (a new CSRF token: nothing of the anonymous one carries)."""
    request.session.clear()
    request.session.update(
        user=user.name, since=int(now.timestamp()), csrf=secrets.token_urlsafe(32)
    )


def signed_in(request: Request) -> User:
    """The signed-in user (a FastAPI dependency); :class:`NotSignedIn` otherwise."""
    console = console_of(request)
    name, since = request.session.get("user"), request.session.get("since")
    if not isinstance(name, str) or not isinstance(since, int):
        raise NotSignedIn
    age = console.clock().timestamp() - since
    if age > console.settings.session_max_hours * 3600 or age < -300:
        request.session.clear()
        raise NotSignedIn
    user = console.users.get(name)
    if user is None:  # removed since
        request.session.clear()
        raise NotSignedIn
    request.state.user = user
    return user


def days_text(days: int | None) -> str:
    if days is None:
        return ""
    if days < 0:
        return f"overdue by {-days} day{'s' if days != -1 else ''}"
    if days == 0:
        return "due today"
    return f"{days} day{'s' if days != 1 else ''}"


def when(at: datetime | None) -> str:
    return "" if at is None else f"{at:%Y-%m-%d %H:%M} UTC"


def short(text: str | None, keep: int = 12) -> str:
    return "" if not text else (text if len(text) <= keep else text[:keep] + "\u2026")


templates.env.filters.update(days=days_text, when=when, short=short)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Any:
    console = console_of(request)
    user = getattr(request.state, "user", None)
    in_force = console.policy_now()
    response = templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "csrf": csrf_token(request),
            "now": console.clock(),
            "request_clock": in_force.request_clock,
            "policy_version": in_force.version,
            **context,
        },
        status_code=status_code,
    )
    return response


__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "Console",
    "NotSignedIn",
    "Refused",
    "console_of",
    "csrf_token",
    "render",
    "signed_in",
    "start_session",
    "templates",
]
