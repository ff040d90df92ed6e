"""The benchmarks' pictures: a run's chart and the history's chart are real images of the
rows they are drawn from, and the performance page shows the kept ones."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from bench.charts import HISTORY_CHART, LATEST_CHART, history_chart, run_chart
from bench.render import DOCUMENT, HISTORY


def row(benchmark: str, value: float, baseline: float, verdict: str) -> dict[str, object]:
    return {
        "benchmark": benchmark,
        "figure": f"{benchmark} figure",
        "unit": "events/s",
        "value": value,
        "baseline": baseline,
        "ratio": value / baseline,
        "verdict": verdict,
    }


def is_a_picture(path: Path) -> None:
    pixels = mpimg.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 400 and height >= 200
    assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.05  # not one colour


def test_a_run_is_drawn_as_each_figure_against_its_baseline(tmp_path: Path) -> None:
    document = {
        "when": "run-1",
        "scale": "tiny",
        "rows": [row("publish", 900.0, 2000.0, "MISS"), row("decide", 1500.0, 1000.0, "pass")],
    }
    drawn = run_chart(document, tmp_path / "run.png")
    is_a_picture(drawn)


def test_a_run_without_baselines_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="baseline"):
        run_chart(
            {"rows": [{**row("keys", 1.0, 1.0, "pass"), "baseline": None}]}, tmp_path / "x.png"
        )


def test_the_history_is_drawn_as_ratios_across_runs(tmp_path: Path) -> None:
    runs = [
        {"when": f"run-{n}", "rows": [row("decide", 1000.0 + 100 * n, 1000.0, "pass")]}
        for n in range(3)
    ]
    is_a_picture(history_chart(runs, tmp_path / "history.png"))


def test_the_performance_page_shows_the_charts_of_the_kept_runs() -> None:
    page = DOCUMENT.read_text(encoding="utf-8")
    for chart in (LATEST_CHART, HISTORY_CHART):
        assert f"(images/{chart.name})" in page
        is_a_picture(chart)
    newest = max(
        (json.loads(p.read_text()) for p in HISTORY.glob("*.json")), key=lambda d: d["when"]
    )
    assert newest["rows"], "the newest kept run has rows"
