"""What the console's pages read from the audit ledger: customers' requests on their clock,
refusals grouped for the Violations page, the chain's state, and records by filter.

Everything here reads; nothing writes to the ledger (records of the privacy team's actions go
through ``privacy.decisions``: :mod:`processors.requests`). Every value shown is a pseudonym,
a policy name, a count or a time: the ledger holds no personal data.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from core.logging import get_logger
from processors.policy import Policy, PolicyBook, RequestClock
from processors.requests import (
    ACCESS,
    ERASURE,
    REQUEST_CLOSED,
    REQUEST_EXTENDED,
    REQUEST_FILED,
    REQUEST_REFUSED,
    parse_request_event_id,
)
from sinks.entry import AuditEntry
from sinks.ledger import audit_chain_head, audit_checkpoints, audit_ledger
from sinks.stored import parse_utc_text, utc_text

log = get_logger(__name__)

DELETION_REQUESTED = "deletion_requested"
REQUEST_RECORD_KINDS = (
    DELETION_REQUESTED,
    REQUEST_FILED,
    REQUEST_EXTENDED,
    REQUEST_REFUSED,
    REQUEST_CLOSED,
)
REFUSABLE_KINDS = ("collected", "used", "shared")
"""Kinds whose refusals are violations (privacy.violations carries the same)."""

_REQUEST_INDEX = "ix_audit_ledger_requests"


def ensure_request_index(engine: Engine) -> None:
    """A partial index over the ledger's request records, so the Requests page reads those
    few rows instead of scanning every decision. Best effort: a database user that may not
    create indexes gets a slower page, and a warning."""
    kinds = ", ".join(f"'{kind}'" for kind in REQUEST_RECORD_KINDS)
    statement = (
        f"CREATE INDEX {'CONCURRENTLY ' if engine.dialect.name == 'postgresql' else ''}"
        f"IF NOT EXISTS {_REQUEST_INDEX} ON audit_ledger (seq) WHERE kind IN ({kinds})"
    )
    try:
        if engine.dialect.name == "postgresql":  # without blocking the workers' appends
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(statement)
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
    except SQLAlchemyError as exc:
        log.warning("console.request_index_not_created", error=type(exc).__name__)


# --------------------------------------------------------------------------- requests


@dataclass
class Extension:
    number: int
    reason: str
    at: datetime
    by: str


@dataclass
class RequestView:
    """One customer request as the ledger tells it, on the policy's clock."""

    request_id: str
    kind: str
    subject_ref: str
    received: datetime
    policy_version: str
    filed_by: str | None = None
    source: str | None = None
    status: str = "pending"
    status_reason: str | None = None
    categories: list[str] = field(default_factory=list)
    shredded: list[str] = field(default_factory=list)
    retained: list[dict[str, str]] = field(default_factory=list)
    extensions: list[Extension] = field(default_factory=list)
    closed_at: datetime | None = None
    refused_by: str | None = None
    due: datetime | None = None
    seqs: list[int] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.status != "pending"

    @property
    def extended(self) -> bool:
        return bool(self.extensions)

    def days_left(self, now: datetime) -> int | None:
        """Whole days until the due date (negative: overdue); None once closed."""
        if self.closed or self.due is None:
            return None
        return math.floor((self.due - now).total_seconds() / 86_400)

    def urgency(self, now: datetime) -> str:
        """``overdue``, ``urgent`` (2 days or less), ``soon`` (a week or less), ``ok``; or
        ``closed``."""
        days = self.days_left(now)
        if days is None:
            return "closed"
        if days < 0:
            return "overdue"
        if days <= 2:
            return "urgent"
        if days <= 7:
            return "soon"
        return "ok"

    @property
    def answered_late(self) -> bool:
        return self.closed_at is not None and self.due is not None and self.closed_at > self.due

    def retained_text(self) -> str:
        return "; ".join(
            f"{r['category']} until {r['until']} ({r['basis']})" for r in self.retained
        )


def _records(engine: Engine, kinds: Sequence[str]) -> Iterator[dict[str, Any]]:
    statement = (
        select(audit_ledger).where(audit_ledger.c.kind.in_(kinds)).order_by(audit_ledger.c.seq)
    )
    with engine.connect() as conn:
        for row in conn.execute(statement):
            yield dict(row._mapping)


def _clock_of(book: PolicyBook, version: str, received: datetime) -> RequestClock | None:
    try:
        policy: Policy = book.get(version)
    except KeyError:
        policy = book.in_force(received)
    return policy.request_clock


def load_requests(engine: Engine, book: PolicyBook) -> list[RequestView]:
    """Every erasure and access request on the ledger, newest received first."""
    views: dict[str, RequestView] = {}
    for row in _records(engine, REQUEST_RECORD_KINDS):
        at = parse_utc_text(row["occurred_at"])
        if row["kind"] == DELETION_REQUESTED:
            _deletion(views, row, at)
            continue
        ref = parse_request_event_id(row["event_id"])
        if ref is None:
            continue
        view = views.get(ref.request_id)
        if row["kind"] == REQUEST_FILED:
            if view is None:
                view = views[ref.request_id] = RequestView(
                    ref.request_id,
                    row["purpose"] or ERASURE,
                    row["subject_ref"],
                    at,
                    row["policy_version"],
                )
            # filed before the pipeline decided: the clock starts at filing
            view.received = min(view.received, at)
            view.policy_version = row["policy_version"]
            view.filed_by = row["recipient"]
            view.source = row["source"]
            view.categories = orjson.loads(row["categories"])
        elif view is None or (row["decision"] != "allow" and row["kind"] != REQUEST_REFUSED):
            continue
        elif row["kind"] == REQUEST_EXTENDED:
            view.extensions.append(
                Extension(ref.number, row["reason_code"], at, str(row["recipient"]))
            )
        elif row["kind"] == REQUEST_REFUSED:
            view.status, view.status_reason, view.closed_at = "refused", row["reason_code"], at
            view.refused_by = row["recipient"]
        elif row["kind"] == REQUEST_CLOSED and view.status == "pending":
            view.status, view.closed_at = "closed", at
        view.seqs.append(int(row["seq"]))
    for view in views.values():
        clock = _clock_of(book, view.policy_version, view.received)
        view.due = None if clock is None else clock.due(view.received, len(view.extensions))
    return sorted(views.values(), key=lambda v: (v.received, v.request_id), reverse=True)


def _deletion(views: dict[str, RequestView], row: Mapping[str, Any], at: datetime) -> None:
    if not row["erasure"]:
        return
    erasure: dict[str, Any] = orjson.loads(row["erasure"])
    request_id = str(erasure["request_id"])
    view = views.get(request_id)
    if view is None:
        view = views[request_id] = RequestView(
            request_id, ERASURE, row["subject_ref"], at, row["policy_version"]
        )
        view.source = row["source"]
        view.categories = orjson.loads(row["categories"])
    view.seqs.append(int(row["seq"]))
    if view.refused_by is not None:
        return  # refused by the privacy team: a later decision does not reopen it
    decided = parse_utc_text(row["decided_at"])
    if row["decision"] == "allow":  # a repeated request is answered again: the latest counts
        view.status, view.status_reason = erasure["status"], None
        view.shredded = list(erasure["shredded"])
        view.retained = list(erasure["retained"])
    else:
        view.status, view.status_reason = "refused", row["reason_code"]
    view.closed_at = decided


STATUSES = ("pending", "completed", "nothing_held", "refused", "closed")


@dataclass(frozen=True, slots=True)
class RequestFilter:
    status: str = ""  # "", "open", "answered", or one of STATUSES
    kind: str = ""
    received_from: date | None = None
    received_to: date | None = None
    due_from: date | None = None
    due_to: date | None = None

    def matches(self, view: RequestView) -> bool:
        if self.status == "open" and view.closed:
            return False
        if self.status == "answered" and not view.closed:
            return False
        if self.status in STATUSES and view.status != self.status:
            return False
        if self.kind and view.kind != self.kind:
            return False
        if not _within(view.received, self.received_from, self.received_to):
            return False
        if self.due_from or self.due_to:
            return view.due is not None and _within(view.due, self.due_from, self.due_to)
        return True

    def query(self) -> dict[str, str]:
        """As query parameters (for links and the CSV of the same view)."""
        out = {"status": self.status, "kind": self.kind}
        for name in ("received_from", "received_to", "due_from", "due_to"):
            value = getattr(self, name)
            out[name] = value.isoformat() if value else ""
        return {k: v for k, v in out.items() if v}


def _within(at: datetime, first: date | None, last: date | None) -> bool:
    day = at.astimezone(UTC).date()
    return (first is None or day >= first) and (last is None or day <= last)


CSV_COLUMNS = (
    "request_id",
    "kind",
    "subject_ref",
    "received",
    "due",
    "days_left",
    "status",
    "status_reason",
    "retained",
    "extended",
    "extensions",
    "filed_by",
    "closed_at",
    "answered_late",
)


def csv_row(view: RequestView, now: datetime) -> list[str]:
    days = view.days_left(now)
    return [
        view.request_id,
        view.kind,
        view.subject_ref,
        view.received.isoformat(timespec="seconds"),
        view.due.isoformat(timespec="seconds") if view.due else "",
        "" if days is None else str(days),
        view.status,
        view.status_reason or "",
        view.retained_text(),
        "yes" if view.extended else "no",
        "; ".join(f"{e.number}: {e.reason} by {e.by} at {e.at:%Y-%m-%d}" for e in view.extensions),
        view.filed_by or "",
        view.closed_at.isoformat(timespec="seconds") if view.closed_at else "",
        "yes" if view.answered_late else "",
    ]


# --------------------------------------------------------------------------- violations

GROUPS = ("reason_code", "actor_role", "source", "recipient", "rule")


@dataclass
class ViolationGroup:
    reason_code: str
    actor_role: str | None
    source: str
    recipient: str | None
    rule: str
    count: int
    first: str
    last: str

    def query(self) -> dict[str, str]:
        """Filters for the ledger records of this group."""
        out = {
            "decision": "deny",
            "reason_code": self.reason_code,
            "source": self.source,
            "rule": self.rule,
            "role": self.actor_role or "-",
            "recipient": self.recipient or "-",
        }
        return out


def _bucket(engine: Engine, column: Any, hourly: bool) -> Any:
    """The hour (``YYYY-MM-DDTHH``) or day of a canonical UTC text column."""
    return func.substr(column, 1, 13 if hourly else 10)


def violations(
    engine: Engine, since: datetime, until: datetime
) -> tuple[list[ViolationGroup], dict[str, Any]]:
    """Refused collections, uses and shares in ``[since, until)``, grouped by reason, role,
    source, recipient and rule (most first), and a chart: refusals per hour (per day past
    three days) by reason code."""
    where = (
        audit_ledger.c.decision == "deny",
        audit_ledger.c.kind.in_(REFUSABLE_KINDS),
        audit_ledger.c.occurred_at >= utc_text(since),
        audit_ledger.c.occurred_at < utc_text(until),
    )
    columns = [audit_ledger.c[name] for name in GROUPS]
    statement = (
        select(
            *columns,
            func.count(),
            func.min(audit_ledger.c.occurred_at),
            func.max(audit_ledger.c.occurred_at),
        )
        .where(*where)
        .group_by(*columns)
        .order_by(func.count().desc())
    )
    hourly = until - since <= timedelta(days=3)
    bucket = _bucket(engine, audit_ledger.c.occurred_at, hourly).label("bucket")
    series_statement = (
        select(bucket, audit_ledger.c.reason_code, func.count())
        .where(*where)
        .group_by(bucket, audit_ledger.c.reason_code)
    )
    with engine.connect() as conn:
        groups = [
            ViolationGroup(
                str(row[0]),
                row[1],
                str(row[2]),
                row[3],
                str(row[4]),
                int(row[5]),
                str(row[6]),
                str(row[7]),
            )
            for row in conn.execute(statement)
        ]
        counts = [(str(b), str(r), int(n)) for b, r, n in conn.execute(series_statement)]
    return groups, _chart(counts, since, until, hourly)


def decisions_per_hour(engine: Engine, since: datetime, until: datetime) -> dict[str, Any]:
    """Decisions per hour (by allow/deny) whose event occurred in ``[since, until)``."""
    bucket = _bucket(engine, audit_ledger.c.occurred_at, True).label("bucket")
    statement = (
        select(bucket, audit_ledger.c.decision, func.count())
        .where(
            audit_ledger.c.occurred_at >= utc_text(since),
            audit_ledger.c.occurred_at < utc_text(until),
        )
        .group_by(bucket, audit_ledger.c.decision)
    )
    with engine.connect() as conn:
        counts = [(str(b), str(d), int(n)) for b, d, n in conn.execute(statement)]
    return _chart(counts, since, until, True)


def _chart(
    counts: Iterable[tuple[str, str, int]], since: datetime, until: datetime, hourly: bool
) -> dict[str, Any]:
    """uPlot's data: x (epoch seconds of each bucket, gaps filled with 0) and one series each."""
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if not hourly:
        start = datetime.combine(start.date(), time(), UTC)
    xs: list[datetime] = []
    at = start
    while at < until and len(xs) < 2_000:
        xs.append(at)
        at += step
    index = {(x.isoformat()[: 13 if hourly else 10]): i for i, x in enumerate(xs)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * len(xs))
    for bucket, name, count in counts:
        position = index.get(bucket)
        if position is not None:
            series[name][position] += count
    return {
        "x": [int(x.timestamp()) for x in xs],
        "series": {name: values for name, values in sorted(series.items())},
        "step": "hour" if hourly else "day",
    }


# --------------------------------------------------------------------------- the chain


@dataclass(frozen=True, slots=True)
class ChainState:
    head_seq: int
    head_hash: str
    checkpoint_seq: int | None
    checkpoint_at: str | None
    checkpoint_key: str | None
    checkpoint_signature: str | None

    @property
    def unsigned(self) -> int:
        return self.head_seq - (self.checkpoint_seq or 0)


def chain_state(engine: Engine) -> ChainState:
    with engine.connect() as conn:
        head = conn.execute(select(audit_chain_head.c.seq, audit_chain_head.c.hash)).first()
        last = conn.execute(
            select(audit_checkpoints).order_by(audit_checkpoints.c.seq.desc()).limit(1)
        ).first()
    seq, hash_ = (0, "0" * 64) if head is None else (int(head[0]), str(head[1]))
    if last is None:
        return ChainState(seq, hash_, None, None, None, None)
    row = last._mapping
    return ChainState(
        seq,
        hash_,
        int(row["seq"]),
        str(row["signed_at"]),
        str(row["key_id"]),
        str(row["signature"]),
    )


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RecordFilter:
    decision: str = ""
    kind: str = ""
    reason_code: str = ""
    role: str = ""  # "-": none
    source: str = ""
    recipient: str = ""  # "-": none
    rule: str = ""
    subject_ref: str = ""
    since: datetime | None = None
    until: datetime | None = None
    seqs: tuple[int, ...] = ()

    def where(self) -> list[Any]:
        c = audit_ledger.c
        where: list[Any] = []
        for value, column in (
            (self.decision, c.decision),
            (self.reason_code, c.reason_code),
            (self.source, c.source),
            (self.rule, c.rule),
            (self.subject_ref, c.subject_ref),
        ):
            if value:
                where.append(column == value)
        if self.kind:
            where.append(c.kind.in_(self.kind.split(",")))
        for value, column in ((self.role, c.actor_role), (self.recipient, c.recipient)):
            if value == "-":
                where.append(column.is_(None))
            elif value:
                where.append(column == value)
        if self.since is not None:
            where.append(c.occurred_at >= utc_text(self.since))
        if self.until is not None:
            where.append(c.occurred_at < utc_text(self.until))
        if self.seqs:
            where.append(c.seq.in_(self.seqs))
        return where


def records(
    engine: Engine, wanted: RecordFilter, limit: int = 200
) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` records that match (as ``audit export`` prints them), and how many
    match in all."""
    where = wanted.where()
    with engine.connect() as conn:
        total = int(
            conn.execute(select(func.count()).select_from(audit_ledger).where(*where)).scalar_one()
        )
        rows = conn.execute(
            select(audit_ledger).where(*where).order_by(audit_ledger.c.seq.desc()).limit(limit)
        ).all()
    return [AuditEntry(dict(row._mapping)).as_export() for row in rows], total


def record(engine: Engine, seq: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(audit_ledger).where(audit_ledger.c.seq == seq)).first()
    return None if row is None else AuditEntry(dict(row._mapping)).as_export()


__all__ = [
    "ACCESS",
    "CSV_COLUMNS",
    "ERASURE",
    "STATUSES",
    "ChainState",
    "RecordFilter",
    "RequestFilter",
    "RequestView",
    "ViolationGroup",
    "chain_state",
    "csv_row",
    "decisions_per_hour",
    "ensure_request_index",
    "load_requests",
    "record",
    "records",
    "violations",
]
