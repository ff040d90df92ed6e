"""Shared by the ledger tests: decisions to append, and what an attacker with DB access does."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from sinks.canonical import row_hash

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def subject_ref_of(n: int) -> str:
    return hashlib.sha256(f"subject-{n}".encode()).hexdigest()


def make_decision(n: int, **overrides: Any) -> dict[str, Any]:
    """A decoded lifecycle.Decision as fastavro returns it (aware datetimes, erasure None)."""
    occurred = START + timedelta(minutes=n)
    decision: dict[str, Any] = {
        "event_id": f"evt-{n:06d}",
        "kind": ("used", "shared", "collected")[n % 3],
        "subject_ref": subject_ref_of(n % 7),
        "source": "billing",
        "categories": ["banking", "service_account"],
        "purpose": "billing",
        "purposes": [],
        "consent_granted": None,
        "recipient": None,
        "actor_role": "billing_clerk",
        "decision": "deny" if n % 5 == 0 else "allow",
        "reason_code": "role_not_authorized" if n % 5 == 0 else "allowed",
        "rule": "roles.billing_clerk (INFORMATION USE)",
        "policy_version": "2025-01",
        "occurred_at": occurred,
        "decided_at": occurred + timedelta(milliseconds=40),
        "source_partition": n % 4,
        "source_offset": n,
        "erasure": None,
    }
    decision.update(overrides)
    return decision


def erasure_decision(n: int) -> dict[str, Any]:
    return make_decision(
        n,
        kind="deletion_requested",
        purpose=None,
        actor_role="privacy_officer",
        decision="allow",
        reason_code="allowed",
        erasure={
            "request_id": f"req-{n}",
            "status": "completed",
            "shredded": ["email", "telephone"],
            "retained": [
                {"category": "banking", "basis": "tax law: 7 years", "until": "2032-03-01"}
            ],
        },
    )


# --------------------------------------------------------------------------- the attacker


def drop_triggers(engine: Engine) -> None:
    """What an attacker with DB access does first: remove the append-only guards."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            names = conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            ).scalars()
            for name in list(names):
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
        else:
            rows = conn.execute(
                text(
                    "SELECT t.tgname, c.relname FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE NOT t.tgisinternal AND c.relname LIKE 'audit_%'"
                )
            ).all()
            for name, table in rows:
                conn.exec_driver_sql(f"DROP TRIGGER {name} ON {table}")


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def stored_row(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM audit_ledger WHERE seq = :seq"), {"seq": seq})
        return dict(row.mappings().one())


def shift_seqs(engine: Engine, from_seq: int, by: int) -> None:
    """Renumber every record from ``from_seq`` on by ``by`` (in two steps: seq is the key)."""
    execute(engine, "UPDATE audit_ledger SET seq = seq + 1000000 WHERE seq >= :s", s=from_seq)
    execute(
        engine,
        "UPDATE audit_ledger SET seq = seq - 1000000 + :by WHERE seq >= 1000000",
        by=by,
    )


def insert_row(engine: Engine, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    values = ", ".join(f":{name}" for name in row)
    execute(engine, f"INSERT INTO audit_ledger ({columns}) VALUES ({values})", **row)


def rehash(engine: Engine, seq: int, prev_hash: str | None = None) -> str:
    """Recompute (and store) the hash of record ``seq``, as an attacker who read the docs can."""
    row = stored_row(engine, seq)
    if prev_hash is not None:
        row["prev_hash"] = prev_hash
    row["hash"] = row_hash(row)
    execute(
        engine,
        "UPDATE audit_ledger SET prev_hash = :p, hash = :h WHERE seq = :s",
        p=row["prev_hash"],
        h=row["hash"],
        s=seq,
    )
    return str(row["hash"])


def drop_event_id_uniqueness(engine: Engine) -> None:
    """Remove the unique index on event_id (SQLite cannot drop it: rebuild the table)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TABLE ledger_copy AS SELECT * FROM audit_ledger"))
            conn.execute(text("DROP TABLE audit_ledger"))
            conn.execute(text("ALTER TABLE ledger_copy RENAME TO audit_ledger"))
        else:
            conn.execute(text("ALTER TABLE audit_ledger DROP CONSTRAINT audit_ledger_event_id_key"))
