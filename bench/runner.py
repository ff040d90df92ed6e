"""``python -m bench [--tiny] [--only NAME ...] [--json PATH]``: run the benchmarks, print the
table (figure, baseline, ratio, target, pass/miss) and write every row to JSON.

Exit status 0 when every benchmark ran (a missed target is reported, not an error), 1 when one
failed to run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.base import Row, Scale, fmt
from bench.environment import BenchEnv
from core import terminal

BENCHMARKS = ("publish", "decide", "ledger", "verify", "replay", "erase", "keys")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def table(rows: list[Row]) -> str:
    header = ("benchmark", "figure", "unit", "value", "baseline", "ratio", "target", "")
    cells = [
        (
            row.benchmark,
            row.figure,
            row.unit,
            fmt(row.value),
            fmt(row.baseline),
            "-" if row.ratio is None else f"{row.ratio:.2f}",
            "-" if row.target is None else str(row.target),
            row.verdict,
        )
        for row in rows
    ]
    out = terminal.table(cells, header=header, right={3, 4, 5}, gap=2)
    baselines = sorted({f"{row.benchmark}: {row.baseline_what}" for row in rows})
    return "\n".join([*out, "", "baselines (measured in the same run):", *baselines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks that all runs")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args(argv)
    scale = Scale(tiny=args.tiny)
    rows: list[Row] = []
    failed: dict[str, str] = {}
    began = time.monotonic()
    timings: dict[str, float] = {}
    with BenchEnv.create() as env:
        for name in [b for b in BENCHMARKS if b in args.only]:
            print(f"[bench] {name} ({scale.name}) ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                module = importlib.import_module(f"bench.{name}")
                produced = module.run(env, scale)
            except Exception:
                failed[name] = traceback.format_exc()
                print(f"[bench] {name} FAILED:\n{failed[name]}", file=sys.stderr, flush=True)
                continue
            timings[name] = round(time.monotonic() - started, 1)
            for row in produced:
                print(
                    f"[bench]   {row.figure}: {fmt(row.value)} {row.unit} "
                    f"(baseline {fmt(row.baseline)})",
                    file=sys.stderr,
                    flush=True,
                )
            rows.extend(produced)
    print(table(rows))
    document = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "scale": scale.name,
        "machine": machine(),
        "seconds": round(time.monotonic() - began, 1),
        "seconds_per_benchmark": timings,
        "rows": [row.as_json() for row in rows],
        "failed": failed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    written = [str(args.json)]
    if rows:
        from bench.charts import run_chart

        written.append(str(run_chart(document, args.json.with_suffix(".png"))))
    print(f"\nwritten to {', '.join(written)} ({document['seconds']:.0f} s)")
    return 1 if failed else 0
