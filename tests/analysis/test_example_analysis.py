"""examples/analysis.py on a real run's Parquet export: its answers agree with the JSON lines
export, and it draws a real chart."""

from __future__ import annotations

import collections
import importlib.util
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from analysis.pipeline_run import ERASED, Run
from fixtures.broker import REPO, run_cli

SCRIPT = REPO / "examples" / "analysis.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_analysis", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def export(pipeline_run: Run) -> Path:
    path = pipeline_run.tmp / "for-the-example.parquet"
    result = run_cli(
        pipeline_run.env, "audit", "export", "--format", "parquet", "--output", str(path)
    )
    assert result.returncode == 0, result.stderr.decode()
    return path


@pytest.fixture(scope="module")
def records(pipeline_run: Run) -> list[dict[str, Any]]:
    result = run_cli(pipeline_run.env, "audit", "export")
    return [json.loads(line) for line in result.stdout.splitlines()]


def monday(text: str) -> str:
    day = datetime.fromisoformat(text).date()
    return str(day - timedelta(days=day.weekday()))


def test_the_answers_agree_with_the_jsonl_export(export: Path, records: list[dict]) -> None:
    answers = load_example().analyse(export)

    denials = collections.Counter(
        (monday(r["occurred_at"]), r["reason_code"]) for r in records if r["decision"] == "deny"
    )
    got = {
        (f"{row.week:%Y-%m-%d}", row.reason_code): row.denials
        for row in answers["denials_by_week"].itertuples()
    }
    assert got == dict(denials)
    assert len({week for week, _ in got}) >= 6

    shares: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in records:
        if r["kind"] == "shared":
            shares[r["recipient"]][r["decision"]] += 1
    got_shares = {
        row.recipient: {"allow": row.allowed, "deny": row.refused}
        for row in answers["shares"].itertuples()
    }
    assert got_shares == {k: {"allow": v["allow"], "deny": v["deny"]} for k, v in shares.items()}

    erasures = answers["erasures"]
    assert len(erasures) == len(ERASED)
    assert (erasures["seconds_to_confirm"] >= 0).all()
    assert (erasures["seconds_to_confirm"] < 600).all()  # filed during the run, decided in it
    assert int(answers["erasure_summary"]["requests"][0]) == len(ERASED)


def test_the_script_prints_three_answers_and_draws_a_real_chart(
    export: Path, records: list[dict], tmp_path: Path
) -> None:
    chart = tmp_path / "denials.png"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(export), "--chart", str(chart)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1. Denials by reason code, per week" in out
    assert "2. Erasure confirmation times" in out
    assert "3. Shares by recipient" in out
    for reason in {r["reason_code"] for r in records if r["decision"] == "deny"}:
        assert reason in out
    for request in {
        r["erasure"]["request_id"] for r in records if r["kind"] == "deletion_requested"
    }:
        assert request in out

    assert chart.stat().st_size > 10_000
    with Image.open(chart) as image:
        assert image.format == "PNG"
        assert image.size == (900, 500)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None
    assert len(colours) > 20  # bars, text and axes: far from one colour
    most = max(count for count, _ in colours)
    assert most < 0.95 * image.size[0] * image.size[1]


def test_the_script_names_a_missing_export(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "nope.parquet")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "nope.parquet does not exist" in result.stderr
