"""The embedded broker honours TANSU_BIN wherever it is started without an explicit binary."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.broker import EmbeddedBroker, broker_binary
from streams.exceptions import BrokerError

from fixtures.broker import LIFECYCLE


def test_tansu_bin_naming_a_missing_file_is_a_clear_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-tansu"
    monkeypatch.setenv("TANSU_BIN", str(missing))
    with pytest.raises(BrokerError, match=f"TANSU_BIN={missing}: no such file"):
        EmbeddedBroker()


def test_tansu_bin_naming_a_file_that_cannot_run_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_executable = tmp_path / "tansu"
    not_executable.write_text("not a program")
    monkeypatch.setenv("TANSU_BIN", str(not_executable))
    with pytest.raises(BrokerError, match=f"TANSU_BIN={not_executable}: not an executable file"):
        EmbeddedBroker()


def test_the_broker_runs_the_binary_tansu_bin_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TANSU_BIN", raising=False)
    chosen = tmp_path / "my-tansu"
    chosen.symlink_to(broker_binary())
    monkeypatch.setenv("TANSU_BIN", str(chosen))
    with EmbeddedBroker() as embedded:
        assert embedded.binary == str(chosen)
        assert embedded.pid is not None
        assert Path(f"/proc/{embedded.pid}/exe").resolve() == chosen.resolve()
        metadata = AdminClient({"bootstrap.servers": embedded.bootstrap}).list_topics(timeout=5)
        assert metadata.brokers


def test_an_explicit_binary_wins_over_tansu_bin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TANSU_BIN", raising=False)
    real = broker_binary()
    monkeypatch.setenv("TANSU_BIN", str(tmp_path / "no-such-tansu"))
    assert broker_binary(real) == real


def test_lifecycle_up_with_a_missing_tansu_bin_exits_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tansu"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
    env.update(
        TANSU_BIN=str(missing),
        LIFECYCLE_DATA_DIR=str(tmp_path / "data"),
        LIFECYCLE_METRICS_PORT="0",
    )
    done = subprocess.run(
        [LIFECYCLE, "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert f"TANSU_BIN={missing}: no such file" in done.stderr
    assert "Traceback" not in done.stderr
