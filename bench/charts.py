"""Pictures of benchmark runs: each figure against its baseline for one run, and the ratio of
each figure to its baseline across the kept runs of ``bench/history/``.

``python -m bench`` draws the first beside its JSON; ``python -m bench.charts`` draws both for
the docs (``docs/images/``) from the history, next to the table ``python -m bench.render``
writes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here or in CI

import matplotlib.pyplot as plt

from bench.render import HISTORY, REPO, load

IMAGES = REPO / "docs" / "images"
LATEST_CHART = IMAGES / "bench-latest.png"
HISTORY_CHART = IMAGES / "bench-history.png"
MEASURED, BASELINE, MISSED = "#1f6f8b", "#b8b8b8", "#c0392b"


def _label(row: dict[str, Any]) -> str:
    figure = str(row["figure"])
    return f"{row['benchmark']}: {figure[:46]}{'...' if len(figure) > 46 else ''}"


def run_chart(document: dict[str, Any], path: Path) -> Path:
    """One panel a row of ``document`` (a ``python -m bench`` JSON): the measured figure and
    its baseline as bars, in the row's unit, red when the row missed its target."""
    rows = [row for row in document["rows"] if row.get("baseline") is not None]
    if not rows:
        raise ValueError("no row with a baseline to draw")
    columns = 3
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(15, 2.6 * lines), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        colour = MISSED if row.get("verdict") == "MISS" else MEASURED
        values = [float(row["value"]), float(row["baseline"])]
        bars = ax.barh(["measured", "baseline"], values, color=[colour, BASELINE])
        ax.bar_label(bars, labels=[f"{v:,.3g}" if v < 100 else f"{v:,.0f}" for v in values])
        ratio = row.get("ratio")
        ax.set_title(_label(row), fontsize=8, loc="left")
        ax.set_xlabel(
            f"{row['unit']}"
            + ("" if ratio is None else f"   ratio {ratio:.2f}")
            + f"   {row.get('verdict', '-')}",
            fontsize=8,
        )
        ax.set_xlim(0, max(values) * 1.25)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.suptitle(
        f"{document.get('scale', '')} run of {document.get('when', '')}: measured against "
        "baseline (same run)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def history_chart(runs: list[dict[str, Any]], path: Path) -> Path:
    """The ratio of each figure to its baseline, run after run (kept runs, oldest first)."""
    ordered = sorted(runs, key=lambda run: str(run.get("when", "")))
    series: dict[str, list[tuple[int, float]]] = {}
    for index, run in enumerate(ordered):
        for row in run["rows"]:
            if row.get("ratio") is not None:
                series.setdefault(_label(row), []).append((index, float(row["ratio"])))
    if not series:
        raise ValueError("no ratio in the history to draw")
    fig, ax = plt.subplots(figsize=(12, 6))
    for label, points in sorted(series.items()):
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ordered)))
    ax.set_xticklabels([str(run.get("when", ""))[:16] for run in ordered], fontsize=8)
    ax.set_ylabel("figure / baseline (log scale)")
    ax.set_title("Each benchmark's ratio to its baseline across kept runs")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def draw_docs(history: Path = HISTORY, images: Path = IMAGES) -> list[Path]:
    """The docs' two charts from the kept runs in ``history``."""
    runs = [load(path) for path in sorted(history.glob("*.json"))]
    if not runs:
        raise ValueError(f"no run in {history}")
    newest = max(runs, key=lambda run: str(run.get("when", "")))
    return [
        run_chart(newest, images / LATEST_CHART.name),
        history_chart(runs, images / HISTORY_CHART.name),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__)
    parser.add_argument("--run", type=Path, help="draw this run's JSON only (beside it, .png)")
    args = parser.parse_args(argv)
    if args.run is not None:
        print(run_chart(json.loads(args.run.read_text()), args.run.with_suffix(".png")))
        return 0
    for path in draw_docs():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
