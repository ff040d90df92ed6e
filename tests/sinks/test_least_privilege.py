"""On PostgreSQL the workers can run as a role that may only add to the ledger.

The append-only triggers stop UPDATE and DELETE, but the tables' owner could still drop or
disable them. In production the owner creates the schema once (any ``lifecycle`` process
started with the owner's URL does: ``create_ledger``) and the workers connect as a role granted
only what appending needs; that role can then neither rewrite a record nor remove the guard.
The grants here are the ones ``deploy/README.md`` gives.
"""

from __future__ import annotations

import uuid

import pytest
from audit_helpers import execute, make_decision
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from core.db import make_engine
from sinks.checkpoints import CheckpointSigner
from sinks.ledger import SqlAuditSink, verify

pytestmark = pytest.mark.postgres

GRANTS = (
    "GRANT SELECT, INSERT ON audit_ledger, audit_checkpoints TO {role}",
    "GRANT SELECT, UPDATE ON audit_chain_head TO {role}",
)


def test_an_append_only_role_appends_and_verifies_but_cannot_remove_the_guard(
    postgres_db_url: str,
) -> None:
    signer = CheckpointSigner.generate()
    owner = make_engine(postgres_db_url)
    role = f"ledger_writer_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    writer: Engine | None = None
    try:
        SqlAuditSink(owner, signer).append([make_decision(1)])  # the owner creates the schema
        execute(owner, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        for grant in GRANTS:
            execute(owner, grant.format(role=role))
        url = make_url(postgres_db_url).set(username=role, password=password)
        writer = make_engine(url.render_as_string(hide_password=False))

        sink = SqlAuditSink(writer, signer)  # finds the schema in place: no DDL as this role
        assert [entry.seq for entry in sink.append([make_decision(2), make_decision(3)])] == [2, 3]
        sink.checkpoint()
        assert verify(writer, signer.public_key).ok

        for statement in (
            "UPDATE audit_ledger SET rule = 'x' WHERE seq = 1",
            "DELETE FROM audit_ledger WHERE seq = 1",
            "TRUNCATE audit_ledger",
            "ALTER TABLE audit_ledger DISABLE TRIGGER ALL",
            "DROP TRIGGER audit_ledger_append_only ON audit_ledger",
            "DROP TABLE audit_checkpoints",
        ):
            with pytest.raises(DBAPIError):
                execute(writer, statement)
        assert verify(owner, signer.public_key).ok
    finally:
        if writer is not None:
            writer.dispose()
        execute(owner, f"REASSIGN OWNED BY {role} TO CURRENT_USER")
        execute(owner, f"DROP OWNED BY {role}")
        execute(owner, f"DROP ROLE {role}")
        owner.dispose()
