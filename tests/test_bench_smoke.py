"""Every benchmark runs once at a tiny size (``python -m bench --tiny``), so none can rot: each
row of the table is present, with a positive figure and baseline. The figures themselves are
not judged here (``make bench`` does that, at full size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EXPECTED_ROWS = {
    "publish": 2,
    "decide": 3,
    "ledger": 1,
    "verify": 1,
    "replay": 1,
    "erase": 2,
    "keys": 3,
}


@pytest.mark.broker
@pytest.mark.timeout(600)
def test_every_benchmark_runs_at_tiny_size_and_reports_each_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        timeout=590,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    document = json.loads(out.read_text())
    assert document["scale"] == "tiny"
    assert document["failed"] == {}
    rows = document["rows"]
    counts = {name: sum(row["benchmark"] == name for row in rows) for name in EXPECTED_ROWS}
    assert counts == EXPECTED_ROWS
    for row in rows:
        assert row["value"] > 0, row
        assert row["baseline"] is not None and row["baseline"] > 0, row
        assert row["verdict"] in ("pass", "MISS"), row
    assert "benchmark" in done.stdout.decode() and "ratio" in done.stdout.decode()
    baselines = {row["baseline_what"] for row in rows if row["benchmark"] == "decide"}
    assert "bare Quix Streams pass-through application, 1 process" in baselines
    assert out.with_suffix(".png").stat().st_size > 10_000  # the run's chart, beside its JSON
