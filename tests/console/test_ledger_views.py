"""What the console reads from the ledger, on SQLite and PostgreSQL: requests joined from the
privacy team's records and the pipeline's erasure decisions, and the console's users."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core.clock import FixedClock
from core.db import make_engine
from lifecycle.console.ledger_views import ensure_request_index, load_requests, violations
from lifecycle.console.users import UserError, UserStore
from processors.policy import PolicyBook, load_policies
from processors.requests import Staff, closed, filed, refused
from sinks.checkpoints import CheckpointSigner
from sinks.ledger import SqlAuditSink

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OLGA = Staff("olga", "privacy_officer", "console")
REF = "d4" * 32


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = (
        f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("postgres_db_url"))
    )
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def sink(engine: Engine) -> SqlAuditSink:
    return SqlAuditSink(engine, CheckpointSigner.generate())


@pytest.fixture(scope="module")
def book() -> PolicyBook:
    return load_policies(REPO / "policy")


def deletion(n: int, request_id: str, verdict: str = "allow", **erasure: Any) -> dict[str, Any]:
    at = NOW + timedelta(minutes=n)
    return {
        "event_id": f"ev-{n}",
        "kind": "deletion_requested",
        "subject_ref": REF,
        "source": "crm",
        "categories": [],
        "purpose": None,
        "purposes": [],
        "consent_granted": None,
        "recipient": None,
        "actor_role": "privacy_officer",
        "decision": verdict,
        "reason_code": "allowed" if verdict == "allow" else "role_not_authorized",
        "rule": "x",
        "policy_version": "2026-01-01",
        "occurred_at": at,
        "decided_at": at,
        "source_partition": 0,
        "source_offset": n,
        "erasure": {
            "request_id": request_id,
            "status": "completed",
            "shredded": ["email"],
            "retained": [],
            **erasure,
        },
    }


def test_requests_join_filing_and_decisions_and_the_latest_answer_counts(
    sink: SqlAuditSink, book: PolicyBook
) -> None:
    policy = book.latest
    sink.append(
        [
            filed(OLGA, request_id="R-1", request_kind="erasure", subject_ref=REF,
                  categories=["email"], policy=policy, at=NOW),
            deletion(1, "R-1", status="nothing_held", shredded=[]),
            deletion(2, "R-1"),  # a repeated request, answered again
            deletion(3, "R-2", verdict="deny"),  # filed elsewhere, refused by the pipeline
            filed(OLGA, request_id="R-3", request_kind="access", subject_ref=REF,
                  categories=(), policy=policy, at=NOW + timedelta(minutes=4)),
            closed(OLGA, request_id="R-3", subject_ref=REF, policy=policy,
                   at=NOW + timedelta(minutes=5)),
            filed(OLGA, request_id="R-4", request_kind="erasure", subject_ref=REF,
                  categories=(), policy=policy, at=NOW + timedelta(minutes=6)),
            refused(OLGA, request_id="R-4", request_kind="erasure", subject_ref=REF,
                    ground="excessive", policy=policy, at=NOW + timedelta(minutes=7)),
            deletion(8, "R-4"),  # the pipeline's answer after a refusal does not reopen it
        ]
    )  # fmt: skip
    views = {v.request_id: v for v in load_requests(sink.engine, book)}
    assert list(views) == ["R-4", "R-3", "R-2", "R-1"]  # newest received first
    first = views["R-1"]
    assert (first.kind, first.status, first.shredded, first.filed_by) == (
        "erasure", "completed", ["email"], "olga",
    )  # fmt: skip
    assert first.received == NOW and first.due == NOW + timedelta(days=30)
    assert first.categories == ["email"] and len(first.seqs) == 3
    assert (views["R-2"].status, views["R-2"].status_reason) == ("refused", "role_not_authorized")
    assert views["R-2"].filed_by is None and views["R-2"].source == "crm"
    assert (views["R-3"].kind, views["R-3"].status) == ("access", "closed")
    assert (views["R-4"].status, views["R-4"].status_reason) == ("refused", "excessive")


def test_the_request_index_is_made_once_and_used_where_the_database_allows(
    engine: Engine, sink: SqlAuditSink, book: PolicyBook
) -> None:
    ensure_request_index(engine)
    ensure_request_index(engine)  # idempotent
    if engine.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'index'"
    else:
        query = "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_ledger'"
    with engine.connect() as conn:
        names = set(conn.execute(text(query)).scalars())
    assert "ix_audit_ledger_requests" in names
    sink.append([deletion(1, "R-9")])
    assert [v.request_id for v in load_requests(engine, book)] == ["R-9"]


def test_violations_count_refused_collections_uses_and_shares_only(sink: SqlAuditSink) -> None:
    sink.append([deletion(1, "R-1", verdict="deny")])  # a refused erasure is not a violation
    groups, chart = violations(sink.engine, NOW - timedelta(days=1), NOW + timedelta(days=1))
    assert groups == [] and chart["series"] == {}


def test_console_users_are_added_listed_locked_and_removed(engine: Engine) -> None:
    clock = FixedClock(NOW)
    users = UserStore(engine, clock, lockout_failures=3, lockout_minutes=10)
    users.add("olga", "privacy_officer", "x" * 12)
    users.add("andy", "analyst", "y" * 12)
    with pytest.raises(UserError, match="exists"):
        users.add("olga", "auditor", "z" * 12)
    with pytest.raises(UserError, match="at least 12 characters"):
        users.add("bob", "auditor", "short")
    with pytest.raises(UserError, match="must be one of"):
        users.add("bob", "billing_clerk", "z" * 12)
    with pytest.raises(UserError, match="user name"):
        users.add("bob smith", "auditor", "z" * 12)
    assert [(u.name, u.role) for u in users.list()] == [
        ("andy", "analyst"),
        ("olga", "privacy_officer"),
    ]
    assert users.sign_in("olga", "x" * 12).user is not None
    for _ in range(3):
        assert users.sign_in("olga", "wrong").user is None
    locked = users.sign_in("olga", "x" * 12)
    assert locked.user is None and locked.locked_until == NOW + timedelta(minutes=10)
    clock.advance(timedelta(minutes=10))
    assert users.sign_in("olga", "x" * 12).user is not None
    with engine.connect() as conn:  # never the password itself
        stored = conn.execute(text("SELECT password_hash FROM console_users")).scalars().all()
    assert all(h.startswith("$argon2id$") and "x" * 12 not in h for h in stored)
    assert users.remove("andy") and not users.remove("andy")
    assert users.get("andy") is None
