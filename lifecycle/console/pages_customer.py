"""The Customer page: a customer's access report, searched by their id.

The id is sent in a POST body, turned into its pseudonym at once and never stored, logged,
put in a URL or shown again; every later action on the page names the pseudonym. Analysts and
auditors see categories only. A privacy officer reveals values by an explicit action, and each
reveal is a ledger record (who, when, which categories; never a value) published before any
value is shown. The report downloads as a printable HTML page and as JSON; an access request's
report, produced for the customer with its values, closes the request.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from core.logging import get_logger
from lifecycle.console.pages_requests import find_request, require_officer
from lifecycle.console.users import User
from lifecycle.console.web import Console, Refused, console_of, render, signed_in, templates
from processors import requests as records
from processors.report import SubjectReport, report_on
from processors.requests import ACCESS, PRIVACY_OFFICER

log = get_logger(__name__)

router = APIRouter(dependencies=[Depends(signed_in)])

HIDDEN = "[hidden]"
_REF = re.compile(r"^[0-9a-f]{64}$")


def _ref(subject_ref: str) -> str:
    if not _REF.match(subject_ref):
        raise Refused(400, "Not a customer pseudonym.")
    return subject_ref


def _report(console: Console, ref: str, reveal: set[str] | None) -> SubjectReport:
    """The report, with the values of the categories in ``reveal`` and the others hidden."""
    in_force = console.policy_now()
    report = report_on(
        console.runtime.engine,
        console.runtime.keystore,
        ref,
        role=PRIVACY_OFFICER if reveal else "analyst",
        policy=in_force,
    )
    for held in report.held:
        if not reveal or held.category not in reveal:
            held.value = HIDDEN
    return report


def _revealable(report: SubjectReport) -> list[str]:
    """The categories the report holds a value of (a shredded one reveals its placeholder)."""
    return sorted({h.category for h in report.held})


def _record_reveal(console: Console, user: User, ref: str, categories: list[str]) -> int | None:
    """Publish the reveal's ledger record (before any value is shown); its seq once on the
    ledger."""
    record = records.revealed(
        console.staff(user),
        subject_ref=ref,
        categories=categories,
        policy=console.policy_now(),
        at=console.clock(),
    )
    console.recorder.record(record)
    log.info("console.values_revealed", subject_ref=ref, categories=categories, user=user.name)
    return console.wait_for_ledger(record["event_id"])


def _open_access_requests(console: Console, ref: str) -> list[Any]:
    from lifecycle.console.ledger_views import load_requests

    return [
        v
        for v in load_requests(console.runtime.engine, console.runtime.policy)
        if v.subject_ref == ref and v.kind == ACCESS and not v.closed
    ]


@router.get("/customer")
def customer_page(request: Request) -> Any:
    return render(request, "customer.html", report=None)


@router.post("/customer")
def customer_search(request: Request, customer_id: Annotated[str, Form()] = "") -> Any:
    console = console_of(request)
    if not customer_id.strip():
        raise Refused(400, "Give the customer's id.")
    ref = console.runtime.keystore.subject_ref(customer_id.strip())
    return _page(request, console, ref, None, None)


def _page(
    request: Request, console: Console, ref: str, revealed: list[str] | None, seq: int | None
) -> Any:
    report = _report(console, ref, set(revealed) if revealed else None)
    return render(
        request,
        "customer.html",
        report=report,
        subject_ref=ref,
        revealed=revealed or [],
        revealable=_revealable(report),
        reveal_seq=seq,
        access_requests=_open_access_requests(console, ref),
    )


@router.post("/customer/reveal")
def reveal(
    request: Request,
    user: Annotated[User, Depends(signed_in)],
    subject_ref: Annotated[str, Form()] = "",
    categories: Annotated[list[str] | None, Form()] = None,
) -> Any:
    console = console_of(request)
    ref = _ref(subject_ref)
    require_officer(console, user, records.VALUES_REVEALED, ref, "reveal values")
    held = _revealable(_report(console, ref, None))
    chosen = sorted(set(categories or held) & set(held))
    if not chosen:
        raise Refused(400, "Nothing to reveal: no value of those categories is held.")
    seq = _record_reveal(console, user, ref, chosen)
    return _page(request, console, ref, chosen, seq)


@router.post("/customer/report")
def download_report(
    request: Request,
    user: Annotated[User, Depends(signed_in)],
    subject_ref: Annotated[str, Form()] = "",
    form: Annotated[str, Form(alias="format")] = "html",
    values: Annotated[str, Form()] = "",
) -> Response:
    """The report as a file: categories only, or (a privacy officer who asks) with values."""
    console = console_of(request)
    ref = _ref(subject_ref)
    revealed: list[str] = []
    if values == "yes":
        require_officer(console, user, records.VALUES_REVEALED, ref, "download values")
        revealed = _revealable(_report(console, ref, None))
        if revealed:
            _record_reveal(console, user, ref, revealed)
    report = _report(console, ref, set(revealed) if revealed else None)
    return _download(request, console, report, form, request_id=None)


@router.post("/requests/{request_id}/report")
def produce_for_customer(
    request: Request,
    request_id: str,
    user: Annotated[User, Depends(signed_in)],
    form: Annotated[str, Form(alias="format")] = "html",
) -> Response:
    """An access request answered: the report with its values, for the customer; the reveal
    and the request's closing are recorded first."""
    console = console_of(request)
    view = find_request(console, request_id)
    require_officer(console, user, records.REQUEST_CLOSED, view.subject_ref, "answer a request")
    if view.kind != ACCESS:
        raise Refused(400, f"{request_id} is an {view.kind} request, not an access request.")
    if view.closed:
        raise Refused(400, f"{request_id} is already answered ({view.status}).")
    revealed = _revealable(_report(console, view.subject_ref, None))
    policy = console.runtime.policy.get(view.policy_version)
    now = console.clock()
    staff = console.staff(user)
    produced = []
    if revealed:
        produced.append(
            records.revealed(
                staff, subject_ref=view.subject_ref, categories=revealed, policy=policy, at=now
            )
        )
    produced.append(
        records.closed(
            staff, request_id=request_id, subject_ref=view.subject_ref, policy=policy, at=now
        )
    )
    console.recorder.record(*produced)
    log.info("console.request_answered", request_id=request_id, user=user.name)
    report = _report(console, view.subject_ref, set(revealed) if revealed else None)
    return _download(request, console, report, form, request_id=request_id)


def _download(
    request: Request, console: Console, report: SubjectReport, form: str, request_id: str | None
) -> Response:
    produced_at = console.clock()
    name = f"access-report-{report.subject_ref[:12]}"
    meta = {
        "produced_at": produced_at.isoformat(timespec="seconds"),
        "policy_version": console.policy_now().version,
        "request_id": request_id,
    }
    if form == "json":
        body = orjson.dumps({**meta, **report.to_dict()}, option=orjson.OPT_INDENT_2)
        return Response(
            body,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
        )
    if form != "html":
        raise Refused(400, "format: html or json")
    page = templates.get_template("report.html").render(
        report=report, meta=meta, policy=console.policy_now(), produced_at=produced_at
    )
    return Response(
        page,
        media_type="text/html; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.html"'},
    )


__all__ = ["router"]
