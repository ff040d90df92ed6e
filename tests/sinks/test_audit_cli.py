"""``lifecycle audit export`` and ``lifecycle audit verify``, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from audit_helpers import drop_triggers, erasure_decision, execute, make_decision
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from core.db import make_engine
from core.settings import load_settings
from lifecycle.cli.audit import EXIT_ERROR, EXIT_TAMPERED, audit
from sinks.checkpoints import load_signing_key, public_key_path
from sinks.export import EXPORT_FIELDS
from sinks.ledger import SqlAuditSink
from streams.keys import open_keystore

CLEAN_ENV = {  # empty: the defaults under LIFECYCLE_DATA_DIR, whatever the outer environment
    "LIFECYCLE_DB_URL": "",
    "LIFECYCLE_MASTER_KEY_FILE": "",
    "LIFECYCLE_SIGNING_KEY_FILE": "",
}


@dataclass
class Setup:
    env: dict[str, str]
    subject_ref: str  # the pseudonym of customer C-10042


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Setup:
    """A ledger of 40 decisions; every 4th is about customer C-10042."""
    env = {**CLEAN_ENV, "LIFECYCLE_DATA_DIR": str(tmp_path / "data"), "LIFECYCLE_DB_URL": db_url}
    settings = load_settings(env)
    engine = make_engine(settings.db_url)
    ref = open_keystore(engine, settings.master_key_file).subject_ref("C-10042")
    sink = SqlAuditSink(engine, load_signing_key(settings.signing_key_file), checkpoint_every=10)
    decisions = [
        make_decision(n, subject_ref=ref) if n % 4 == 0 else make_decision(n) for n in range(1, 40)
    ]
    sink.append([*decisions, erasure_decision(40)])
    sink.close()
    engine.dispose()
    return Setup(env, ref)


def run(setup: Setup, *args: str) -> Result:
    return CliRunner().invoke(audit, list(args), env=setup.env, catch_exceptions=False)


def lines(result: Result) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_export_writes_every_record_as_a_json_line_in_seq_order(setup: Setup) -> None:
    result = run(setup, "export")
    assert result.exit_code == 0, result.output
    records = lines(result)
    assert [r["seq"] for r in records] == list(range(1, 41))
    assert list(records[0]) == list(EXPORT_FIELDS)
    assert records[-1]["erasure"]["shredded"] == ["email", "telephone"]  # type: ignore[index]
    assert records[0]["occurred_at"] == "2025-03-01T09:01:00.000Z"


def test_each_exported_line_rehashes_to_its_hash(setup: Setup) -> None:
    for record in lines(run(setup, "export")):
        claimed = record.pop("hash")
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() == claimed


def test_export_filters_by_subject_time_kind_and_decision(setup: Setup) -> None:
    by_subject = lines(run(setup, "export", "--subject", "C-10042"))
    assert [r["seq"] for r in by_subject] == list(range(4, 40, 4))
    assert {r["subject_ref"] for r in by_subject} == {setup.subject_ref}
    by_ref = lines(run(setup, "export", "--subject-ref", setup.subject_ref))
    assert by_ref == by_subject
    window = lines(
        run(setup, "export", "--since", "2025-03-01T09:10", "--until", "2025-03-01T10:20:00+01:00")
    )
    assert [r["seq"] for r in window] == list(range(10, 20))  # until is exclusive, zones honoured
    denied = lines(run(setup, "export", "--decision", "deny", "--kind", "shared"))
    assert [r["seq"] for r in denied] == [n for n in range(1, 40) if n % 5 == 0 and n % 3 == 1]
    assert all(r["decision"] == "deny" and r["kind"] == "shared" for r in denied)
    both = lines(run(setup, "export", "--subject", "C-10042", "--decision", "deny"))
    assert [r["seq"] for r in both] == [20]
    assert lines(run(setup, "export", "--since", "2030-01-01")) == []


def test_export_as_csv_has_a_header_and_one_row_per_record(setup: Setup) -> None:
    result = run(setup, "export", "--format", "csv", "--kind", "deletion_requested")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.exit_code == 0
    assert len(rows) == 1
    assert list(rows[0]) == list(EXPORT_FIELDS)
    row = rows[0]
    assert (row["seq"], row["categories"], row["purpose"]) == ("40", "banking;service_account", "")
    assert json.loads(row["erasure"])["retained"][0]["until"] == "2032-03-01"


def test_export_refuses_bad_options(setup: Setup) -> None:
    assert run(setup, "export", "--since", "last tuesday").exit_code == 2
    assert run(setup, "export", "--decision", "maybe").exit_code == 2
    assert run(setup, "export", "--subject", "C-1", "--subject-ref", "abc").exit_code == 2


def test_export_by_subject_without_the_key_store_is_an_error(setup: Setup, tmp_path: Path) -> None:
    env = {**setup.env, "LIFECYCLE_MASTER_KEY_FILE": str(tmp_path / "absent.key")}
    result = CliRunner().invoke(audit, ["export", "--subject", "C-10042"], env=env)
    assert result.exit_code == EXIT_ERROR
    assert "master key" in result.stderr


def test_verify_exits_zero_with_a_one_line_summary_when_intact(setup: Setup) -> None:
    result = run(setup, "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("ok: 40 records, ")
    report = json.loads(run(setup, "verify", "--json").stdout)
    assert report["ok"] is True and report["head_seq"] == 40 and report["signed_seq"] == 40


def test_verify_exits_non_zero_naming_the_first_bad_seq(setup: Setup) -> None:
    engine = make_engine(load_settings(setup.env).db_url)
    drop_triggers(engine)
    execute(engine, "UPDATE audit_ledger SET reason_code = 'consent_withdrawn' WHERE seq = 17")
    execute(engine, "DELETE FROM audit_ledger WHERE seq = 30")
    engine.dispose()
    result = run(setup, "verify")
    assert result.exit_code == EXIT_TAMPERED
    assert result.stdout.startswith("TAMPERED at seq 17: record 17 was altered")
    report = json.loads(run(setup, "verify", "--json").stdout)
    assert (report["ok"], report["first_bad_seq"]) == (False, 17)


def test_verify_on_several_jobs_reports_what_one_finds(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.import_module("sinks.ledger.verify"), "RANGE_SIZE", 8)
    assert run(setup, "verify", "--jobs", "2").stdout.startswith("ok: 40 records, ")
    engine = make_engine(load_settings(setup.env).db_url)
    drop_triggers(engine)
    execute(engine, "DELETE FROM audit_ledger WHERE seq = 25")  # the first of a range
    engine.dispose()
    on_two = run(setup, "verify", "--jobs", "2", "--json")
    assert on_two.exit_code == EXIT_TAMPERED
    assert json.loads(on_two.stdout) == json.loads(
        run(setup, "verify", "--jobs", "1", "--json").stdout
    )
    assert json.loads(on_two.stdout)["first_bad_seq"] == 25
    assert run(setup, "verify", "--jobs", "0").exit_code == 2


def test_verify_with_another_public_key_fails(setup: Setup, tmp_path: Path) -> None:
    load_signing_key(tmp_path / "other.key")
    result = run(setup, "verify", "--public-key", str(public_key_path(tmp_path / "other.key")))
    assert result.exit_code == EXIT_TAMPERED
    assert "not one of the given public keys" in result.stdout


def test_verify_without_a_public_key_or_a_ledger_cannot_check(setup: Setup, tmp_path: Path) -> None:
    missing_key = run(setup, "verify", "--public-key", str(tmp_path / "nowhere.pub"))
    assert missing_key.exit_code == EXIT_ERROR
    assert "does not exist" in missing_key.stderr
    no_ledger = {**CLEAN_ENV, "LIFECYCLE_DATA_DIR": str(tmp_path / "empty")}
    load_signing_key(load_settings(no_ledger).signing_key_file)
    result = CliRunner().invoke(audit, ["verify"], env=no_ledger)
    assert result.exit_code == EXIT_ERROR
    assert "no audit ledger" in result.stderr


@pytest.mark.postgres
def test_an_auditor_elsewhere_verifies_with_a_read_only_role_and_only_the_public_key(
    postgres_db_url: str, tmp_path: Path
) -> None:
    owner = make_engine(postgres_db_url)
    keys = tmp_path / "worker-keys"
    sink = SqlAuditSink(owner, load_signing_key(keys / "ledger-signing.key"), checkpoint_every=10)
    sink.append([make_decision(n) for n in range(1, 26)])
    sink.close()
    auditor = f"auditor_{uuid.uuid4().hex[:12]}"
    execute(owner, f"CREATE ROLE {auditor} LOGIN")
    execute(
        owner, f"GRANT SELECT ON audit_ledger, audit_checkpoints, audit_chain_head TO {auditor}"
    )
    published = tmp_path / "auditor" / "ledger-signing.pub"  # all the auditor gets of the keys
    published.parent.mkdir()
    published.write_bytes(public_key_path(keys / "ledger-signing.key").read_bytes())
    read_only = make_url(postgres_db_url).set(username=auditor, password=None)
    env = {
        **CLEAN_ENV,
        "LIFECYCLE_DATA_DIR": str(tmp_path / "auditor" / "data"),
        "LIFECYCLE_DB_URL": read_only.render_as_string(hide_password=False),
    }
    try:
        result = CliRunner().invoke(audit, ["verify", "--public-key", str(published)], env=env)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("ok: 25 records, 1 signed checkpoints verified")
        assert "last checkpoint at seq 25\n" in result.stdout
        exported = CliRunner().invoke(audit, ["export", "--format", "jsonl"], env=env)
        assert exported.exit_code == 0, exported.output
        assert len(exported.stdout.splitlines()) == 25
        assert not (tmp_path / "auditor" / "data").exists()  # no key, no file made there
        with pytest.raises(DBAPIError, match="permission denied"):
            execute(make_engine(env["LIFECYCLE_DB_URL"]), "DELETE FROM audit_chain_head")
    finally:
        execute(owner, f"DROP OWNED BY {auditor}")
        execute(owner, f"DROP ROLE {auditor}")
        owner.dispose()
