"""``lifecycle audit verify --metrics-file`` (and ``--every``): the result of a scheduled verify
as a node-exporter textfile, which the alert rules read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audit_helpers import drop_triggers, execute, make_decision
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from core.db import make_engine
from core.settings import load_settings
from lifecycle.cli.audit import EXIT_ERROR, EXIT_TAMPERED, audit
from sinks.checkpoints import load_signing_key
from sinks.ledger import SqlAuditSink

LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))
CLEAN_ENV = {
    "LIFECYCLE_DB_URL": "",
    "LIFECYCLE_MASTER_KEY_FILE": "",
    "LIFECYCLE_SIGNING_KEY_FILE": "",
}


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {**CLEAN_ENV, "LIFECYCLE_DATA_DIR": str(tmp_path / "data"), "LIFECYCLE_DB_URL": db_url}
    settings = load_settings(env)
    engine = make_engine(settings.db_url)
    with SqlAuditSink(
        engine, load_signing_key(settings.signing_key_file), checkpoint_every=5
    ) as sink:
        for start in range(1, 21, 5):
            sink.append([make_decision(n) for n in range(start, start + 5)])
    engine.dispose()
    return env


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(audit, ["verify", *args], env=env, catch_exceptions=False)


def read_metrics(path: Path) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def tamper(env: dict[str, str], seq: int = 7) -> None:
    engine = make_engine(load_settings(env).db_url)
    drop_triggers(engine)
    execute(engine, "UPDATE audit_ledger SET rule = 'rewritten' WHERE seq = :s", s=seq)
    engine.dispose()


def test_an_intact_ledger_writes_ok(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "lifecycle_audit_verify.prom"
    result = run(env, "--metrics-file", str(path))
    assert result.exit_code == 0, result.output
    metrics = read_metrics(path)
    assert metrics["lifecycle_audit_verify_ok"] == 1
    assert metrics["lifecycle_audit_verify_tampered"] == 0
    assert metrics["lifecycle_audit_verify_error"] == 0
    assert metrics["lifecycle_audit_verify_records"] == 20
    assert metrics["lifecycle_audit_verify_signed_seq"] == 20
    assert metrics["lifecycle_audit_verify_first_bad_seq"] == 0
    assert abs(metrics["lifecycle_audit_verify_last_run_timestamp_seconds"] - time.time()) < 60


def test_a_tampered_ledger_writes_not_ok_and_the_first_bad_seq(
    env: dict[str, str], tmp_path: Path
) -> None:
    tamper(env)
    path = tmp_path / "verify.prom"
    result = run(env, "--metrics-file", str(path))
    assert result.exit_code == EXIT_TAMPERED
    metrics = read_metrics(path)
    assert metrics["lifecycle_audit_verify_ok"] == 0
    assert metrics["lifecycle_audit_verify_tampered"] == 1
    assert metrics["lifecycle_audit_verify_first_bad_seq"] == 7


def test_a_verify_that_cannot_check_writes_an_error(tmp_path: Path) -> None:
    env = {**CLEAN_ENV, "LIFECYCLE_DATA_DIR": str(tmp_path / "nothing-here")}
    path = tmp_path / "verify.prom"
    result = run(env, "--metrics-file", str(path))
    assert result.exit_code == EXIT_ERROR
    metrics = read_metrics(path)
    assert metrics["lifecycle_audit_verify_ok"] == 0
    assert metrics["lifecycle_audit_verify_error"] == 1
    assert metrics["lifecycle_audit_verify_tampered"] == 0


def test_every_needs_a_metrics_file(env: dict[str, str]) -> None:
    result = run(env, "--every", "60")
    assert result.exit_code == 2
    assert "--every needs --metrics-file" in result.output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_running_verifier_notices_tampering_at_its_next_round(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "verify.prom"
    process = subprocess.Popen(
        [LIFECYCLE, "audit", "verify", "--metrics-file", str(path), "--every", "1"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not path.exists() or read_metrics(path)["lifecycle_audit_verify_ok"] != 1:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        tamper(env, seq=12)
        while read_metrics(path)["lifecycle_audit_verify_ok"] != 0:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        assert read_metrics(path)["lifecycle_audit_verify_first_bad_seq"] == 12
        assert process.poll() is None, "a tampered ledger does not stop the verifier"
    finally:
        process.terminate()
        process.wait(10)
