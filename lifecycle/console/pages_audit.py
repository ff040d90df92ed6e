"""The Violations, Dead letters and Audit pages, and the ledger's records behind them."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from core.logging import get_logger
from lifecycle.console.bus import dead_letters
from lifecycle.console.ledger_views import (
    RecordFilter,
    chain_state,
    decisions_per_hour,
    record,
    records,
    violations,
)
from lifecycle.console.web import Console, Refused, console_of, render, signed_in
from sinks.chain import VerifyReport
from sinks.checkpoints import load_public_key, public_key_path
from sinks.exceptions import SinkError
from sinks.export import EXPORT_FIELDS, csv_cell
from sinks.ledger import iter_records, verify

log = get_logger(__name__)

router = APIRouter(dependencies=[Depends(signed_in)])


def _moment(value: str | None, name: str, default: datetime) -> datetime:
    if not value:
        return default
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(400, f"{name}: {value!r} is not a date or time such as 2026-03-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _range(
    console: Console, since: str | None, until: str | None, days: int
) -> tuple[datetime, datetime]:
    now = console.clock()
    end = _moment(until, "until", now + timedelta(minutes=1))
    start = _moment(since, "since", end - timedelta(days=days))
    if start >= end:
        raise Refused(400, "since must be before until")
    return start, end


def chart_json(chart: dict[str, Any]) -> str:
    """A chart's data as JSON for a ``<script type="application/json">`` block (no ``<``, so
    no text in it can close the block)."""
    return orjson.dumps(chart).decode().replace("<", "\\u003c")


# --------------------------------------------------------------------------- violations


@router.get("/violations")
def violations_page(request: Request, since: str | None = None, until: str | None = None) -> Any:
    console = console_of(request)
    start, end = _range(console, since, until, 7)
    groups, chart = violations(console.runtime.engine, start, end)
    return render(
        request,
        "violations.html",
        groups=groups,
        chart=chart_json(chart),
        since=start,
        until=end,
        total=sum(g.count for g in groups),
    )


# --------------------------------------------------------------------------- dead letters


@router.get("/deadletters")
def dead_letters_page(request: Request) -> Any:
    console = console_of(request)
    rows, total = dead_letters(console.runtime.settings.kafka_consumer_config())
    return render(request, "deadletters.html", rows=rows, total=total)


# --------------------------------------------------------------------------- audit


@dataclass
class VerifyRun:
    started_at: datetime
    checked: int = 0
    report: VerifyReport | None = None
    error: str | None = None
    finished_at: datetime | None = None
    seconds: float = 0.0


_runs: dict[int, VerifyRun] = {}
_runs_lock = threading.Lock()


def _verify(console: Console, run: VerifyRun) -> None:
    began = time.monotonic()
    try:
        key = load_public_key(public_key_path(console.runtime.settings.signing_key_file))

        def progress(checked: int) -> None:
            run.checked = checked

        run.report = verify(console.runtime.engine, key, progress=progress)
    except (SinkError, OSError) as exc:
        run.error = str(exc)
    finally:
        run.seconds = time.monotonic() - began
        run.finished_at = console.clock()
        log.info(
            "console.verify_finished",
            ok=None if run.report is None else run.report.ok,
            seconds=round(run.seconds, 2),
        )


def _current_run(console: Console) -> VerifyRun | None:
    with _runs_lock:
        return _runs.get(id(console))


@router.get("/audit")
def audit_page(request: Request) -> Any:
    console = console_of(request)
    now = console.clock()
    chart = decisions_per_hour(
        console.runtime.engine, now - timedelta(hours=48), now + timedelta(minutes=1)
    )
    return render(
        request,
        "audit.html",
        chain=chain_state(console.runtime.engine),
        run=_current_run(console),
        chart=chart_json(chart),
        today=now.date().isoformat(),
        week_ago=(now - timedelta(days=7)).date().isoformat(),
    )


@router.post("/audit/verify")
def start_verify(request: Request) -> Any:
    console = console_of(request)
    with _runs_lock:
        run = _runs.get(id(console))
        if run is None or run.finished_at is not None:
            run = _runs[id(console)] = VerifyRun(console.clock())
            threading.Thread(
                target=_verify, args=(console, run), name="console-verify", daemon=True
            ).start()
    return render(request, "_verify.html", run=run)


@router.get("/audit/verify")
def verify_status(request: Request) -> Any:
    return render(request, "_verify.html", run=_current_run(console_of(request)))


@router.get("/audit/export")
def export(
    request: Request, format: str = "jsonl", since: str | None = None, until: str | None = None
) -> Response:
    """The ledger's records in seq order, as ``lifecycle audit export`` writes them."""
    console = console_of(request)
    start = _moment(since, "since", datetime(1970, 1, 1, tzinfo=UTC)) if since else None
    end = _moment(until, "until", console.clock()) if until else None
    if format not in ("jsonl", "csv"):
        raise Refused(400, "format: jsonl or csv")
    entries = iter_records(console.runtime.engine, since=start, until=end)

    def jsonl() -> Iterator[bytes]:
        for entry in entries:
            yield orjson.dumps(entry.as_export(), option=orjson.OPT_APPEND_NEWLINE)

    def rows() -> Iterator[bytes]:
        line = io.StringIO()
        writer = csv.writer(line)
        writer.writerow(EXPORT_FIELDS)
        for entry in entries:
            exported = entry.as_export()
            writer.writerow([csv_cell(exported[name]) for name in EXPORT_FIELDS])
            yield line.getvalue().encode()
            line.seek(0)
            line.truncate()
        yield line.getvalue().encode()

    media = "application/x-ndjson" if format == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(
        jsonl() if format == "jsonl" else rows(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit.{format}"'},
    )


@router.get("/audit/records")
def records_page(
    request: Request,
    decision: str = "",
    kind: str = "",
    reason_code: str = "",
    role: str = "",
    source: str = "",
    recipient: str = "",
    rule: str = "",
    subject_ref: str = "",
    since: str | None = None,
    until: str | None = None,
    seqs: str = "",
) -> Any:
    console = console_of(request)
    try:
        wanted_seqs = tuple(int(s) for s in seqs.split(",") if s.strip())
    except ValueError:
        raise Refused(400, "seqs: whole numbers separated by commas") from None
    wanted = RecordFilter(
        decision=decision,
        kind=kind,
        reason_code=reason_code,
        role=role,
        source=source,
        recipient=recipient,
        rule=rule,
        subject_ref=subject_ref,
        since=_moment(since, "since", datetime.min.replace(tzinfo=UTC)) if since else None,
        until=_moment(until, "until", datetime.max.replace(tzinfo=UTC)) if until else None,
        seqs=wanted_seqs,
    )
    found, total = records(console.runtime.engine, wanted)
    return render(request, "records.html", records=found, total=total)


@router.get("/audit/records/{seq}")
def record_page(request: Request, seq: int) -> Any:
    found = record(console_of(request).runtime.engine, seq)
    if found is None:
        raise Refused(404, f"No ledger record {seq}.")
    pretty = orjson.dumps(found, option=orjson.OPT_INDENT_2).decode()
    return render(request, "record.html", record=found, pretty=pretty)


__all__ = ["router"]
