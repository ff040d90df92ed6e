"""The Requests page: every erasure and access request on the policy's clock; filing,
extending and refusing them (privacy officers), and the current view as CSV."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from core.logging import get_logger
from lifecycle.console.ledger_views import (
    CSV_COLUMNS,
    STATUSES,
    RequestFilter,
    RequestView,
    csv_row,
    load_requests,
)
from lifecycle.console.users import User
from lifecycle.console.web import Console, Refused, console_of, render, signed_in
from processors import requests as records
from processors.reasons import ROLE_NOT_AUTHORIZED
from processors.requests import ACCESS, ERASURE, EXTENSION_NOT_PERMITTED
from streams.exceptions import PublishError, ValidationError

log = get_logger(__name__)

router = APIRouter(dependencies=[Depends(signed_in)])
SHOWN = 500


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Refused(400, f"{name}: {value!r} is not a date such as 2026-03-01") from None


def _filter(
    status: str | None,
    kind: str | None,
    received_from: str | None,
    received_to: str | None,
    due_from: str | None,
    due_to: str | None,
) -> RequestFilter:
    if status and status not in (*STATUSES, "open", "answered"):
        raise Refused(
            400, f"status: {status!r} is not one of open, answered, {', '.join(STATUSES)}"
        )
    if kind and kind not in (ERASURE, ACCESS):
        raise Refused(400, f"kind: {kind!r} is not erasure or access")
    return RequestFilter(
        status=status or "",
        kind=kind or "",
        received_from=_date(received_from, "received from"),
        received_to=_date(received_to, "received to"),
        due_from=_date(due_from, "due from"),
        due_to=_date(due_to, "due to"),
    )


def _view(request: Request, wanted: RequestFilter) -> list[RequestView]:
    console = console_of(request)
    return [
        v
        for v in load_requests(console.runtime.engine, console.runtime.policy)
        if wanted.matches(v)
    ]


@router.get("/requests")
def requests_page(
    request: Request,
    status: str | None = None,
    kind: str | None = None,
    received_from: str | None = None,
    received_to: str | None = None,
    due_from: str | None = None,
    due_to: str | None = None,
) -> Any:
    wanted = _filter(status, kind, received_from, received_to, due_from, due_to)
    views = queue_order(_view(request, wanted))
    policy = console_of(request).policy_now()
    return render(
        request,
        "requests.html",
        views=views[:SHOWN],
        total=len(views),
        wanted=wanted,
        statuses=STATUSES,
        categories=sorted(policy.categories),
        query=wanted.query(),
    )


@router.get("/requests.csv")
def requests_csv(
    request: Request,
    status: str | None = None,
    kind: str | None = None,
    received_from: str | None = None,
    received_to: str | None = None,
    due_from: str | None = None,
    due_to: str | None = None,
) -> Response:
    wanted = _filter(status, kind, received_from, received_to, due_from, due_to)
    now = console_of(request).clock()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for view in _view(request, wanted):
        writer.writerow(csv_row(view, now))
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="requests.csv"'},
    )


def queue_order(views: list[RequestView]) -> list[RequestView]:
    """Open requests first, the soonest due at the top; then the answered ones, newest first."""
    open_ones = sorted((v for v in views if not v.closed), key=lambda v: (v.due is None, v.due))
    return open_ones + [v for v in views if v.closed]


def _record_refusal(
    console: Console,
    user: User,
    kind: str,
    subject_ref: str,
    reason: str,
    detail: str,
    **extra: Any,
) -> None:
    record = records.refused_action(
        console.staff(user),
        kind=kind,
        subject_ref=subject_ref,
        reason_code=reason,
        detail=detail,
        policy=console.policy_now(),
        at=console.clock(),
        **extra,
    )
    console.recorder.record(record)
    log.warning("console.action_refused", user=user.name, kind=kind, reason=reason)


def require_officer(console: Console, user: User, kind: str, subject_ref: str, what: str) -> None:
    """Refuse (403) a user who is not a privacy officer, recording the attempt on the ledger."""
    if user.is_officer:
        return
    _record_refusal(
        console,
        user,
        kind,
        subject_ref,
        ROLE_NOT_AUTHORIZED,
        f"console: only a privacy officer may {what} ({user.role} refused)",
    )
    raise Refused(403, f"Only a privacy officer may {what}. The attempt was recorded.")


@router.post("/requests/file")
def file_request(
    request: Request,
    user: Annotated[User, Depends(signed_in)],
    customer_id: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = ERASURE,
    categories: Annotated[list[str] | None, Form()] = None,
) -> Any:
    console = console_of(request)
    customer_id = customer_id.strip()
    if not customer_id:
        raise Refused(400, "Give the customer's id.")
    if kind not in (ERASURE, ACCESS):
        raise Refused(400, f"kind: {kind!r} is not erasure or access")
    policy = console.policy_now()
    chosen = sorted(set(categories or ()))
    unknown = [c for c in chosen if c not in policy.categories]
    if unknown:
        raise Refused(400, f"unknown categories: {', '.join(unknown)}")
    ref = console.runtime.keystore.subject_ref(customer_id)
    require_officer(console, user, records.REQUEST_FILED, ref, f"file an {kind} request")
    request_id = records.new_request_id()
    now = console.clock()
    filed = records.filed(
        console.staff(user),
        request_id=request_id,
        request_kind=kind,
        subject_ref=ref,
        categories=chosen if kind == ERASURE else (),
        policy=policy,
        at=now,
    )
    try:
        console.recorder.record(filed)  # who filed, first: the clock starts now
        if kind == ERASURE:
            console.filer.file(
                subject_id=customer_id, request_id=request_id, categories=chosen, officer=user.name
            )
    except (PublishError, ValidationError) as exc:
        log.error("console.file_failed", request_id=request_id, error=str(exc)[:300])
        raise Refused(503, f"The request could not be published: {exc}") from exc
    console.recent[request_id] = {"kind": kind, "subject_ref": ref, "received": now}
    console.wait_for_ledger(filed["event_id"])  # the request's page then shows it from there
    log.info(
        "console.request_filed", request_id=request_id, kind=kind, subject_ref=ref, user=user.name
    )
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


def _find(console: Console, request_id: str) -> RequestView | None:
    for view in load_requests(console.runtime.engine, console.runtime.policy):
        if view.request_id == request_id:
            return view
    return None


def find_request(console: Console, request_id: str) -> RequestView:
    """The request as the ledger tells it, or as this console filed it moments ago (404
    otherwise)."""
    view = _find(console, request_id)
    if view is not None:
        console.recent.pop(request_id, None)
        return view
    recent = console.recent.get(request_id)
    if recent is None:
        raise Refused(404, f"No request {request_id} on the ledger.")
    policy = console.runtime.policy.in_force(recent["received"])
    pending = RequestView(
        request_id, recent["kind"], recent["subject_ref"], recent["received"], policy.version
    )
    clock = policy.request_clock
    pending.due = None if clock is None else clock.due(pending.received)
    return pending


@router.get("/requests/{request_id}")
def request_page(request: Request, request_id: str) -> Any:
    console = console_of(request)
    view = find_request(console, request_id)
    policy = console.runtime.policy.get(view.policy_version)
    confirmation = console.confirmations.get(request_id)
    if confirmation is not None and view.status == "pending":  # ahead of the ledger read
        view.status = str(confirmation["status"])
        view.shredded = list(confirmation["shredded_categories"])
        view.retained = list(confirmation["retained_categories"])
        view.closed_at = confirmation["completed_at"]
    return render(
        request,
        "request.html",
        view=view,
        clock=policy.request_clock,
        on_ledger=request_id not in console.recent,
        confirmation=confirmation,
    )


@router.get("/requests/{request_id}/confirmation")
def confirmation_part(request: Request, request_id: str) -> Any:
    """The erasure's confirmation as it arrives on privacy.deletion-confirmations (htmx)."""
    console = console_of(request)
    confirmation = console.confirmations.wait(request_id, timeout=2.0)
    response = render(
        request, "_confirmation.html", request_id=request_id, confirmation=confirmation
    )
    if confirmation is not None:  # the request is answered: show the page as it is now
        response.headers["HX-Refresh"] = "true"
    return response


@router.post("/requests/{request_id}/extend")
def extend_request(
    request: Request,
    request_id: str,
    user: Annotated[User, Depends(signed_in)],
    reason: Annotated[str, Form()] = "",
    customer_told: Annotated[str, Form()] = "",
) -> Any:
    console = console_of(request)
    view = find_request(console, request_id)
    require_officer(console, user, records.REQUEST_EXTENDED, view.subject_ref, "extend a request")
    policy = console.runtime.policy.get(view.policy_version)
    now = console.clock()
    why_not = records.extension_refusal(
        policy.request_clock,
        extensions_so_far=len(view.extensions),
        received=view.received,
        reason=reason,
        at=now,
        is_closed=view.closed,
    )
    if why_not is not None:
        _record_refusal(
            console,
            user,
            records.REQUEST_EXTENDED,
            view.subject_ref,
            EXTENSION_NOT_PERMITTED,
            f"request {request_id}: {why_not}",
            purpose=view.kind,
        )
        raise Refused(
            400, f"The policy does not allow this extension: {why_not}. The attempt was recorded."
        )
    if customer_told != "yes":
        raise Refused(
            400,
            "Confirm that the customer has been told of the extension and its reason: "
            "the policy's condition.",
        )
    record = records.extended(
        console.staff(user),
        request_id=request_id,
        request_kind=view.kind,
        subject_ref=view.subject_ref,
        number=len(view.extensions) + 1,
        reason=reason,
        policy=policy,
        at=now,
    )
    console.recorder.record(record)
    console.wait_for_ledger(record["event_id"])
    log.info("console.request_extended", request_id=request_id, reason=reason, user=user.name)
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


@router.post("/requests/{request_id}/refuse")
def refuse_request(
    request: Request,
    request_id: str,
    user: Annotated[User, Depends(signed_in)],
    ground: Annotated[str, Form()] = "",
) -> Any:
    console = console_of(request)
    view = find_request(console, request_id)
    require_officer(console, user, records.REQUEST_REFUSED, view.subject_ref, "refuse a request")
    policy = console.runtime.policy.get(view.policy_version)
    clock = policy.request_clock
    if view.closed:
        raise Refused(400, f"Request {request_id} is closed ({view.status}).")
    if clock is None or ground not in clock.refusals:
        known = ", ".join(clock.refusals) if clock is not None else "none"
        raise Refused(400, f"{ground!r} is not a ground the policy gives for refusing ({known}).")
    record = records.refused(
        console.staff(user),
        request_id=request_id,
        request_kind=view.kind,
        subject_ref=view.subject_ref,
        ground=ground,
        policy=policy,
        at=console.clock(),
    )
    console.recorder.record(record)
    console.wait_for_ledger(record["event_id"])
    log.info("console.request_refused", request_id=request_id, ground=ground, user=user.name)
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


__all__ = ["find_request", "queue_order", "require_officer", "router"]
