"""``audit export --format parquet`` without the optional extra, and the options that do not go
together: clear errors, no half-written file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from audit_helpers import make_decision
from click.testing import CliRunner, Result

from core.db import make_engine
from core.settings import load_settings
from lifecycle.cli.audit import EXIT_ERROR, audit
from sinks.checkpoints import load_signing_key
from sinks.ledger import SqlAuditSink

CLEAN_ENV = {
    "LIFECYCLE_DB_URL": "",
    "LIFECYCLE_MASTER_KEY_FILE": "",
    "LIFECYCLE_SIGNING_KEY_FILE": "",
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {**CLEAN_ENV, "LIFECYCLE_DATA_DIR": str(tmp_path / "data")}
    settings = load_settings(env)
    engine = make_engine(settings.db_url)
    with SqlAuditSink(engine, load_signing_key(settings.signing_key_file)) as sink:
        sink.append([make_decision(n) for n in range(1, 6)])
    engine.dispose()
    return env


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(audit, list(args), env=env, catch_exceptions=False)


def test_without_pyarrow_the_error_names_the_extra_to_install(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, module, None)  # import now fails, as when absent
    output = tmp_path / "ledger.parquet"
    result = run(env, "export", "--format", "parquet", "--output", str(output))
    assert result.exit_code == EXIT_ERROR
    assert "Parquet export needs pyarrow" in result.output
    assert "pip install 'lifecycle[analysis]'" in result.output
    assert not output.exists()
    assert list(tmp_path.glob("*.parquet*")) == []


def test_with_pyarrow_the_same_command_writes_every_record(
    env: dict[str, str], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    output = tmp_path / "ledger.parquet"
    result = run(env, "export", "--format", "parquet", "--output", str(output))
    assert result.exit_code == 0, result.output
    assert pq.read_table(output).column("seq").to_pylist() == [1, 2, 3, 4, 5]


def test_parquet_needs_an_output_file(env: dict[str, str]) -> None:
    result = run(env, "export", "--format", "parquet")
    assert result.exit_code == 2
    assert "--format parquet needs --output FILE" in result.output


def test_a_bundle_takes_no_record_filters(env: dict[str, str], tmp_path: Path) -> None:
    result = run(env, "export", "--bundle", str(tmp_path / "b"), "--kind", "used")
    assert result.exit_code == 2
    assert "only --since, --until and --public-key go with it" in result.output
    assert not (tmp_path / "b").exists()
