"""verify: ``sinks.ledger.verify`` (``lifecycle audit verify``) over a SQLite ledger: every
record re-encoded and re-hashed, every link and every signed checkpoint checked, as the command
runs it: on every usable core (helper processes check ranges of records, each reading its own;
their start is timed too).

Baseline: reading the same rows (the same ``SELECT`` verify streams, through the driver) in one
process, in the same run. Rounds alternate, medians count. The ledger is the one the ``ledger``
benchmark wrote when it ran, else one written here.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bench import ledger
from bench.base import Row, Scale, Target
from bench.environment import BenchEnv
from bench.workload import decisions
from core.db import make_engine
from core.settings import load_settings
from processors.audit_stage import BATCH_MAX
from processors.policy import load_policies
from sinks.canonical import CANONICAL_KEYS
from sinks.checkpoints import CheckpointSigner
from sinks.ledger import SqlAuditSink, verify
from sinks.ledger.verify import RANGE_SIZE, usable_cores

NAME = "verify"
ROUNDS = 3


def run(env: BenchEnv, scale: Scale) -> list[Row]:
    path, public_key, count = env.cache.get(ledger.NAME) or write_ledger(env, scale)
    engine = make_engine(f"sqlite:///{path}")
    jobs = usable_cores() if count > RANGE_SIZE else 1  # what the command uses
    figures, baselines = [], []
    try:
        for _ in range(ROUNDS):
            baselines.append(count / read_rows(path, count))
            began = time.perf_counter()
            report = verify(engine, public_key)
            figures.append(count / (time.perf_counter() - began))
            assert report.ok and report.records == count, report.summary()
    finally:
        engine.dispose()
    return [
        Row(
            NAME,
            f"audit verify on {jobs} core{'s' if jobs > 1 else ''}: hashes, links, checkpoints",
            "records/s",
            statistics.median(figures),
            statistics.median(baselines),
            "reading the same rows (same SELECT, driver cursor), one process",
            Target("ratio_at_least", 0.7),
            {
                "records": count,
                "rounds": ROUNDS,
                "checkpoints": report.checkpoints,
                "jobs": jobs,
            },
        )
    ]


def read_rows(path: Path, count: int) -> float:
    """Seconds to fetch every row verify reads."""
    engine = make_engine(f"sqlite:///{path}")
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.arraysize = 20_000
        began = time.perf_counter()
        cursor.execute(f"SELECT {', '.join(CANONICAL_KEYS)}, hash FROM audit_ledger ORDER BY seq")
        seen = 0
        while rows := cursor.fetchmany():
            seen += len(rows)
        elapsed = time.perf_counter() - began
        assert seen == count
        return elapsed
    finally:
        connection.close()
        engine.dispose()


def write_ledger(env: BenchEnv, scale: Scale) -> tuple[Path, Ed25519PublicKey, int]:
    count = scale.pick(100_000, 3_000)
    folder = env.folder(NAME)
    book = load_policies(load_settings({"LIFECYCLE_DATA_DIR": str(folder)}).policy_dir)
    values = decisions(count, scale.pick(10_000, 300), book)
    path = folder / "ledger.sqlite"
    signer = CheckpointSigner.generate()
    engine = make_engine(f"sqlite:///{path}")
    with SqlAuditSink(engine, signer) as sink:
        for start in range(0, count, BATCH_MAX):
            sink.append(values[start : start + BATCH_MAX])
    engine.dispose()
    return path, signer.public_key, count
