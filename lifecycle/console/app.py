"""The console's application: FastAPI with Jinja2 pages, htmx and uPlot served from the
package (nothing is loaded from elsewhere), sessions, CSRF protection and sign-in.

:func:`open_console` opens the services (database, key store, bus) from the settings the
workers use; :func:`create_app` builds the ASGI application on them.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from core.clock import Clock, SystemClock
from core.logging import get_logger
from lifecycle.console.bus import ConfirmationWatcher, ErasureFiler
from lifecycle.console.ledger_views import ensure_request_index
from lifecycle.console.settings import ConsoleSettings
from lifecycle.console.users import UserStore
from lifecycle.console.web import (
    CSRF_FIELD,
    CSRF_HEADER,
    HERE,
    Console,
    NotSignedIn,
    Refused,
    console_of,
    csrf_token,
    render,
    start_session,
)
from lifecycle.runtime import Runtime
from processors.requests import LedgerRecorder
from sinks.ledger import create_ledger

log = get_logger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'"
)


def open_console(
    runtime: Runtime,
    settings: ConsoleSettings,
    clock: Clock | None = None,
    *,
    on_filed: Callable[[str], None] = lambda _request_id: None,
) -> Console:
    """The console's services on ``runtime`` (whose settings name a reachable broker);
    ``on_filed`` hears of each erasure request it publishes."""
    clock = clock or SystemClock()
    runtime.open()
    create_ledger(runtime.engine)
    ensure_request_index(runtime.engine)
    client = runtime.settings.kafka_client_config()
    return Console(
        runtime=runtime,
        settings=settings,
        users=UserStore(
            runtime.engine,
            clock,
            lockout_failures=settings.lockout_failures,
            lockout_minutes=settings.lockout_minutes,
        ),
        recorder=LedgerRecorder(client, runtime.codec),
        confirmations=ConfirmationWatcher(runtime.settings.kafka_consumer_config(), runtime.codec),
        filer=ErasureFiler(runtime, on_filed),
        clock=clock,
    )


async def enforce_csrf(request: Request) -> None:
    """Refuse an unsafe request without the session's CSRF token (see :mod:`.web`)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            value = (await request.form()).get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not sent or not secrets.compare_digest(expected, sent):
        log.warning("console.csrf_refused", path=request.url.path)
        raise Refused(
            403,
            "This form was sent without its security token (CSRF) or with an old one. "
            "Reload the page and send it again.",
        )


def create_app(console: Console) -> FastAPI:
    from lifecycle.console import pages_audit, pages_customer, pages_requests

    app = FastAPI(
        title="lifecycle console",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(enforce_csrf)],
    )
    app.state.console = console
    app.add_middleware(
        SessionMiddleware,
        secret_key=console.settings.session_key(),
        session_cookie="lifecycle_console",
        max_age=console.settings.session_minutes * 60,
        same_site="strict",
        https_only=console.settings.secure_cookies,
    )

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not request.url.path.startswith("/static/"):
            # pages may show revealed values: never kept by a browser or a proxy
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, _exc: NotSignedIn) -> Response:
        if request.method == "GET" and "hx-request" not in request.headers:
            return RedirectResponse("/login", status_code=303)
        response = PlainTextResponse("sign in first", status_code=401)
        response.headers["HX-Redirect"] = "/login"
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return render(request, "refused.html", status_code=exc.status, message=exc.message)  # type: ignore[no-any-return]

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"ok": True})

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/requests", status_code=303)

    @app.get("/login")
    def login_page(request: Request) -> Any:
        return render(request, "login.html")

    @app.post("/login")
    def login(request: Request, name: str = Form(""), password: str = Form("")) -> Any:
        c = console_of(request)
        outcome = c.users.sign_in(name.strip(), password)
        if outcome.user is None:
            if outcome.locked_until is not None:
                message = (
                    "Too many failed sign-ins for this name: it is locked until "
                    f"{outcome.locked_until.astimezone(UTC):%H:%M} UTC."
                )
            else:
                message = "Wrong name or password."
            known = c.users.get(name.strip()) is not None
            log.warning(  # a name typed wrong may be anything (a password): only users' names
                "console.sign_in_refused",
                user=name.strip() if known else "(not a user)",
                locked=outcome.locked_until is not None,
            )
            return render(request, "login.html", status_code=401, error=message, name=name[:64])
        start_session(request, outcome.user, c.clock())
        log.info("console.signed_in", user=outcome.user.name, role=outcome.user.role)
        return RedirectResponse("/requests", status_code=303)

    @app.post("/logout")
    def logout(request: Request) -> RedirectResponse:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    app.include_router(pages_requests.router)
    app.include_router(pages_customer.router)
    app.include_router(pages_audit.router)
    app.state.started = datetime.now(UTC)
    _ = csrf_token  # re-exported for templates through render()
    return app


__all__ = ["create_app", "enforce_csrf", "open_console"]
