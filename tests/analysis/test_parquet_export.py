"""``lifecycle audit export --format parquet`` on a real run's ledger: DuckDB reads it back with
typed columns, and it holds exactly the rows of the JSON lines export."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result

from lifecycle.cli.audit import audit
from sinks.stored import utc_text

from analysis.pipeline_run import Run

EVERY_KIND = {
    "collected",
    "used",
    "shared",
    "deletion_requested",
    "consent_changed",
    "retention_sweep",
}
TYPES = {
    "seq": "BIGINT",
    "event_id": "VARCHAR",
    "kind": "VARCHAR",
    "subject_ref": "VARCHAR",
    "decision": "VARCHAR",
    "reason_code": "VARCHAR",
    "policy_version": "VARCHAR",
    "occurred_at": "TIMESTAMP WITH TIME ZONE",
    "decided_at": "TIMESTAMP WITH TIME ZONE",
    "recorded_at": "TIMESTAMP WITH TIME ZONE",
    "source": "VARCHAR",
    "actor_role": "VARCHAR",
    "purpose": "VARCHAR",
    "purposes": "VARCHAR[]",
    "consent_granted": "BOOLEAN",
    "recipient": "VARCHAR",
    "categories": "VARCHAR[]",
    "rule": "VARCHAR",
    "erasure": "STRUCT(request_id VARCHAR, status VARCHAR, shredded VARCHAR[], "
    'retained STRUCT(category VARCHAR, basis VARCHAR, "until" VARCHAR)[])',
    "source_partition": "INTEGER",
    "source_offset": "BIGINT",
    "prev_hash": "VARCHAR",
    "hash": "VARCHAR",
}


def cli(run: Run, *args: str) -> Result:
    """``lifecycle audit ...`` in this process (the run's worker is done: the ledger is final)."""
    result = CliRunner().invoke(audit, list(args), env=run.env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def export(run: Run, name: str, *args: str) -> Path:
    path = run.tmp / name
    cli(run, "export", "--format", "parquet", "--output", str(path), *args)
    return path


def jsonl(run: Run, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli(run, "export", *args).stdout.splitlines()]


def as_export(row: dict[str, Any]) -> dict[str, Any]:
    """A DuckDB row in the JSON lines export's form (timestamps as canonical text)."""
    return {
        name: utc_text(value) if isinstance(value, datetime) else value
        for name, value in row.items()
    }


def rows(path: Path, where: str = "true") -> list[dict[str, Any]]:
    with duckdb.connect() as db:
        relation = db.sql(f"SELECT * FROM read_parquet('{path}') WHERE {where} ORDER BY seq")
        names = relation.columns
        return [as_export(dict(zip(names, values, strict=True))) for values in relation.fetchall()]


@pytest.fixture(scope="module")
def full_export(pipeline_run: Run) -> Path:
    return export(pipeline_run, "ledger.parquet")


@pytest.fixture(scope="module")
def full_jsonl(pipeline_run: Run) -> list[dict[str, Any]]:
    return jsonl(pipeline_run)


def test_the_run_covers_every_event_kind_and_the_erasure_and_share_paths(
    pipeline_run: Run, full_jsonl: list[dict[str, Any]]
) -> None:
    records = full_jsonl
    assert len(records) == pipeline_run.records
    assert {r["kind"] for r in records} >= EVERY_KIND
    denials = {r["reason_code"] for r in records if r["decision"] == "deny"}
    assert len(denials) >= 4, denials
    assert len({r["recipient"] for r in records if r["kind"] == "shared"}) == 4


def test_duckdb_reads_the_parquet_export_with_typed_columns(full_export: Path) -> None:
    with duckdb.connect() as db:
        described = db.sql(f"DESCRIBE SELECT * FROM read_parquet('{full_export}')").fetchall()
    assert {name: kind for name, kind, *_ in described} == TYPES
    assert [name for name, *_ in described] == list(TYPES)


def test_the_parquet_export_holds_exactly_the_rows_of_the_jsonl_export(
    full_export: Path, full_jsonl: list[dict[str, Any]]
) -> None:
    assert rows(full_export) == full_jsonl


@pytest.mark.parametrize(
    ("option", "value", "keep"),
    [
        (
            "--reason-code",
            "purpose_not_permitted",
            lambda r: r["reason_code"] == "purpose_not_permitted",
        ),
        ("--role", "web_admin", lambda r: r["actor_role"] == "web_admin"),
        ("--source", "outage", lambda r: r["source"] == "outage"),
        (
            "--purpose",
            "transaction_processing",
            lambda r: (
                r["purpose"] == "transaction_processing"
                or "transaction_processing" in r["purposes"]
            ),
        ),
        ("--recipient", "authorities", lambda r: r["recipient"] == "authorities"),
    ],
)
def test_each_new_filter_selects_the_same_records_in_every_format(
    pipeline_run: Run, full_jsonl: list[dict[str, Any]], option: str, value: str, keep: Any
) -> None:
    expected = [r for r in full_jsonl if keep(r)]
    assert expected, f"the run has no record for {option} {value}"
    assert jsonl(pipeline_run, option, value) == expected
    name = f"{option.strip('-')}-{value}.parquet"
    assert rows(export(pipeline_run, name, option, value)) == expected
    csv = cli(pipeline_run, "export", "--format", "csv", option, value)
    assert len(csv.stdout.splitlines()) == len(expected) + 1  # the header
