"""Three questions about the audit ledger, answered from a Parquet export with DuckDB.

    lifecycle audit export --format parquet --output ledger.parquet
    python examples/analysis.py ledger.parquet --chart denials.png

1. Denials by reason code, per week (weeks start on Monday, UTC; by when the event happened).
2. Erasure confirmation times: from a deletion request to its decision (keys shredded).
3. Shares by recipient: how many were allowed and how many refused.

It draws the first as a stacked bar chart (PNG). Needs ``pip install 'lifecycle[analysis]'``
(DuckDB, pandas, matplotlib). The export holds pseudonyms and policy names only, never
personal data, so neither does anything printed or drawn here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt
import pandas as pd

DENIALS_BY_WEEK = """
    SELECT date_trunc('week', occurred_at AT TIME ZONE 'UTC')::DATE AS week,
           reason_code,
           count(*) AS denials
    FROM ledger
    WHERE decision = 'deny'
    GROUP BY ALL
    ORDER BY week, reason_code
"""

ERASURE_TIMES = """
    SELECT erasure.request_id AS request_id,
           erasure.status AS status,
           len(erasure.shredded) AS shredded_categories,
           (epoch_ms(decided_at) - epoch_ms(occurred_at)) / 1000.0 AS seconds_to_confirm
    FROM ledger
    WHERE kind = 'deletion_requested' AND erasure IS NOT NULL
    ORDER BY decided_at
"""

ERASURE_SUMMARY = """
    SELECT count(*) AS requests,
           quantile_cont(seconds_to_confirm, 0.5) AS p50_seconds,
           quantile_cont(seconds_to_confirm, 0.99) AS p99_seconds,
           max(seconds_to_confirm) AS max_seconds
    FROM erasures
"""

SHARES_BY_RECIPIENT = """
    SELECT recipient,
           count(*) FILTER (WHERE decision = 'allow') AS allowed,
           count(*) FILTER (WHERE decision = 'deny') AS refused,
           count(*) AS shares
    FROM ledger
    WHERE kind = 'shared'
    GROUP BY recipient
    ORDER BY shares DESC, recipient
"""


def analyse(export: Path) -> dict[str, pd.DataFrame]:
    """The answers, as DataFrames: denials_by_week, erasures, erasure_summary, shares."""
    with duckdb.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        db.read_parquet(str(export)).create_view("ledger")
        erasures = db.sql(ERASURE_TIMES)
        erasures.create_view("erasures")
        return {
            "denials_by_week": db.sql(DENIALS_BY_WEEK).df(),
            "erasures": erasures.df(),
            "erasure_summary": db.sql(ERASURE_SUMMARY).df(),
            "shares": db.sql(SHARES_BY_RECIPIENT).df(),
        }


def draw_denials(denials_by_week: pd.DataFrame, path: Path) -> None:
    """A stacked bar per week, one colour per reason code."""
    table = denials_by_week.pivot_table(
        index="week", columns="reason_code", values="denials", aggfunc="sum", fill_value=0
    )
    figure, axes = plt.subplots(figsize=(9, 5), dpi=100)
    table.plot.bar(ax=axes, stacked=True, width=0.8)
    axes.set_title("Denials by reason, per week")
    axes.set_xlabel("week starting (UTC)")
    axes.set_ylabel("denials")
    axes.set_xticklabels([f"{week:%Y-%m-%d}" for week in table.index], rotation=0)
    axes.legend(title="reason code", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="a Parquet file from lifecycle audit export")
    parser.add_argument(
        "--chart", type=Path, default=Path("denials.png"), help="where to draw the chart"
    )
    args = parser.parse_args(argv)
    if not args.export.is_file():
        parser.error(f"{args.export} does not exist")
    answers = analyse(args.export)
    with pd.option_context("display.width", 120, "display.max_rows", 200):
        print("1. Denials by reason code, per week\n")
        print(answers["denials_by_week"].to_string(index=False), end="\n\n")
        print("2. Erasure confirmation times (seconds from request to decision)\n")
        print(answers["erasures"].to_string(index=False), end="\n\n")
        print(answers["erasure_summary"].to_string(index=False), end="\n\n")
        print("3. Shares by recipient\n")
        print(answers["shares"].to_string(index=False), end="\n\n")
    draw_denials(answers["denials_by_week"], args.chart)
    print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
