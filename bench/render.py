"""``python -m bench.render [--check]``: the newest run in ``bench/history/`` as a Markdown table,
written into ``docs/performance.md`` between its two marker comments.

The newest run is the history file with the latest ``when``. ``--check`` writes nothing and
exits 1 when the document's table is not the one the newest run gives (the docs tests do the
same), so the measured figures quoted in the docs are always those of a kept run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.base import Target, fmt

REPO = Path(__file__).resolve().parent.parent
HISTORY = REPO / "bench" / "history"
DOCUMENT = REPO / "docs" / "performance.md"
BEGIN = "<!-- bench-table: begin (written by python -m bench.render from bench/history/) -->"
END = "<!-- bench-table: end -->"


class RenderError(Exception):
    """The history or the document is not as the renderer needs it."""


def newest_run(history: Path = HISTORY) -> Path:
    """The history file of the latest run (by its ``when``)."""
    runs = sorted(history.glob("*.json"))
    if not runs:
        raise RenderError(f"no run in {history}: run `make bench` and copy its JSON there")
    return max(runs, key=lambda path: (str(load(path).get("when", "")), path.name))


def load(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RenderError(f"{path}: cannot be read as JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise RenderError(f"{path}: not a benchmark run (no 'rows' list)")
    return document


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _target(raw: dict[str, Any] | None, unit: str) -> str:
    if raw is None:
        return "none"
    target = Target(raw["goal"], float(raw["value"]))
    return str(target) if target.goal == "ratio_at_least" else f"{target} {unit}"


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio < 100 else fmt(ratio)


def table(run: dict[str, Any], source: str) -> str:
    """The Markdown block for ``run`` (read from ``source``, a path relative to the repository)."""
    machine = run.get("machine") or {}
    seconds = run.get("seconds")
    lines = [
        f"Run: `{source}`, scale `{run.get('scale', '?')}`"
        + (f", {seconds:.0f} s" if isinstance(seconds, int | float) else "")
        + f"; {machine.get('cores', '?')} cores ({_cell(machine.get('cpu', '?'))}),"
        f" Python {machine.get('python', '?')}.",
        "",
        "| benchmark | figure | measured | baseline, same run | ratio | target | verdict |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in run["rows"]:
        unit = str(row.get("unit", ""))
        ratio = row.get("ratio")
        lines.append(
            "| "
            + " | ".join(
                [
                    _cell(row["benchmark"]),
                    _cell(row["figure"]),
                    f"{fmt(row['value'])} {_cell(unit)}",
                    "-" if row.get("baseline") is None else f"{fmt(row['baseline'])} {_cell(unit)}",
                    _ratio(ratio),
                    _cell(_target(row.get("target"), unit)),
                    _cell(row.get("verdict", "-")),
                ]
            )
            + " |"
        )
    failed = run.get("failed") or {}
    if failed:
        lines += ["", "Did not run: " + ", ".join(sorted(failed)) + "."]
    return "\n".join(lines)


def rewrite(document: str, block: str) -> str:
    """``document`` with everything between the markers replaced by ``block``."""
    start = document.find(BEGIN)
    stop = document.find(END)
    if start < 0 or stop < start:
        raise RenderError(f"the document lacks the markers {BEGIN!r} ... {END!r}, in that order")
    return document[: start + len(BEGIN)] + "\n" + block + "\n" + document[stop:]


def rendered(document: str, history: Path = HISTORY) -> str:
    """``document`` as the newest run in ``history`` renders it."""
    path = newest_run(history)
    source = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    return rewrite(document, table(load(path), source))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    parser.add_argument("--document", type=Path, default=DOCUMENT, help=f"default: {DOCUMENT}")
    parser.add_argument("--history", type=Path, default=HISTORY, help=f"default: {HISTORY}")
    args = parser.parse_args(argv)
    try:
        current = args.document.read_text(encoding="utf-8")
        wanted = rendered(current, args.history)
    except (OSError, RenderError) as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.check:
        if current != wanted:
            print(f"{args.document}: the table is stale; run python -m bench.render")
            return 1
        return 0
    if current != wanted:
        args.document.write_text(wanted, encoding="utf-8")
        print(f"{args.document}: table rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
