"""ledger: decisions appended to the audit ledger on SQLite (``SqlAuditSink.append`` in the
ledger stage's batches: validation, canonical encoding, hash chain, the chain-head lock, one
transaction, an Ed25519-signed checkpoint every 1,000 records).

Baseline: the same stored rows (already chained) written with a plain ``executemany``, one
transaction per batch, into a fresh database with the same schema and settings (WAL,
``synchronous=FULL``), in the same run. Rounds alternate, medians count.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.base import Row, Scale, Target
from bench.environment import BenchEnv
from bench.workload import decisions
from core.db import make_engine
from core.settings import load_settings
from processors.audit_stage import BATCH_MAX
from processors.policy import load_policies
from sinks.canonical import chain_rows
from sinks.checkpoints import CheckpointSigner
from sinks.ledger import SqlAuditSink, audit_ledger, create_ledger
from sinks.stored import decision_row, utc_text

NAME = "ledger"
ROUNDS = 3


def run(env: BenchEnv, scale: Scale) -> list[Row]:
    count = scale.pick(100_000, 3_000)
    folder = env.folder(NAME)
    book = load_policies(load_settings({"LIFECYCLE_DATA_DIR": str(folder)}).policy_dir)
    values = decisions(count, scale.pick(10_000, 300), book)
    batches = [values[i : i + BATCH_MAX] for i in range(0, count, BATCH_MAX)]
    figures, baselines = [], []
    for n in range(ROUNDS):
        baselines.append(count / plain_inserts(folder / f"plain-{n}.sqlite", values))
        path = folder / f"ledger-{n}.sqlite"
        signer = CheckpointSigner.generate()
        engine = make_engine(f"sqlite:///{path}")
        sink = SqlAuditSink(engine, signer)
        began = time.perf_counter()
        for batch in batches:
            sink.append(batch)
        figures.append(count / (time.perf_counter() - began))
        checkpoints = sink.last_checkpoint
        sink.close()
        engine.dispose()
        env.cache[NAME] = (path, signer.public_key, count)
    return [
        Row(
            NAME,
            "decisions appended: chain + signed checkpoints, SQLite",
            "records/s",
            statistics.median(figures),
            statistics.median(baselines),
            "plain executemany of the same rows, same schema",
            Target("at_least", 50_000),
            {
                "records": count,
                "batch": BATCH_MAX,
                "rounds": ROUNDS,
                "last_checkpoint_seq": checkpoints.seq if checkpoints else None,
            },
        )
    ]


def plain_inserts(path: Path, values: list[dict[str, Any]]) -> float:
    """Seconds to insert the stored rows of ``values`` with executemany, batch by batch."""
    rows = [decision_row(value) for value in values]
    chain_rows(rows, 0, "0" * 64, utc_text(values[0]["decided_at"]))
    columns = [column.name for column in audit_ledger.columns]
    tuples = [tuple(row[name] for name in columns) for row in rows]
    statement = (
        f"INSERT INTO audit_ledger ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )
    engine = make_engine(f"sqlite:///{path}")
    create_ledger(engine)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        began = time.perf_counter()
        for start in range(0, len(tuples), BATCH_MAX):
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(statement, tuples[start : start + BATCH_MAX])
            cursor.execute("COMMIT")
        return time.perf_counter() - began
    finally:
        connection.close()
        engine.dispose()
