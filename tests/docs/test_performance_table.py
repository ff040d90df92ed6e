"""``docs/performance.md`` shows the newest kept benchmark run exactly as ``python -m bench.render``
renders it, so the figures in the docs are always those of a file in ``bench/history/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import render

ROW = {
    "benchmark": "publish",
    "figure": "JSON line -> record | acked",
    "unit": "events/s",
    "value": 31415.2,
    "baseline": 649212.0,
    "target": {"goal": "at_least", "value": 30000},
    "ratio": 0.0484,
    "verdict": "pass",
}


def write_run(folder: Path, file_name: str, when: str, **changes: Any) -> Path:
    run = {
        "when": when,
        "scale": "full",
        "machine": {"cpu": "Test CPU", "cores": 2, "python": "3.11.7"},
        "seconds": 300.4,
        "rows": [{**ROW, **changes}],
        "failed": {},
    }
    path = folder / file_name
    path.write_text(json.dumps(run), encoding="utf-8")
    return path


def test_the_performance_page_shows_the_newest_kept_run() -> None:
    document = render.DOCUMENT.read_text(encoding="utf-8")
    assert render.rendered(document) == document, (
        "docs/performance.md does not show the newest run in bench/history/: "
        "run python -m bench.render"
    )


def test_the_check_command_agrees_with_the_page() -> None:
    assert render.main(["--check"]) == 0


def test_the_newest_run_is_the_latest_when_not_the_last_name(tmp_path: Path) -> None:
    write_run(tmp_path, "b-older.json", "2030-01-01T10:00:00+00:00", value=1.0)
    newer = write_run(tmp_path, "a-newer.json", "2030-02-01T10:00:00+00:00", value=2.0)
    assert render.newest_run(tmp_path) == newer


def test_a_run_renders_every_row_with_its_baseline_target_and_verdict(tmp_path: Path) -> None:
    path = write_run(tmp_path, "run.json", "2030-01-01T10:00:00+00:00")
    block = render.table(render.load(path), "bench/history/run.json")
    row = next(line for line in block.splitlines() if line.startswith("| publish"))
    cells = [cell.strip() for cell in row.strip("|").split(" | ")]
    assert cells == [
        "publish",
        "JSON line -> record \\| acked",
        "31,415 events/s",
        "649,212 events/s",
        "0.05",
        ">= 30,000 events/s",
        "pass",
    ]
    assert "`bench/history/run.json`" in block
    assert "2 cores (Test CPU), Python 3.11.7" in block


def test_only_the_marked_part_of_the_page_is_rewritten() -> None:
    page = f"intro\n{render.BEGIN}\nold table\n{render.END}\nafter\n"
    assert render.rewrite(page, "new table") == (
        f"intro\n{render.BEGIN}\nnew table\n{render.END}\nafter\n"
    )


def test_a_page_without_markers_or_an_empty_history_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(render.RenderError, match="markers"):
        render.rewrite("no markers here\n", "table")
    with pytest.raises(render.RenderError, match="no run in"):
        render.newest_run(tmp_path)
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(render.RenderError, match=r"broken\.json"):
        render.load(tmp_path / "broken.json")


def test_check_fails_on_a_stale_page_and_rendering_fixes_it(tmp_path: Path) -> None:
    write_run(tmp_path, "run.json", "2030-01-01T10:00:00+00:00")
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n{render.BEGIN}\nstale\n{render.END}\n", encoding="utf-8")
    arguments = ["--document", str(page), "--history", str(tmp_path)]
    assert render.main([*arguments, "--check"]) == 1
    assert render.main(arguments) == 0
    assert render.main([*arguments, "--check"]) == 0
    assert "| publish |" in page.read_text(encoding="utf-8")
