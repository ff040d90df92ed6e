"""Append and verify rates on SQLite: a floor far below the measured rates (catches a lost
batch path, e.g. a commit per record), and the numbers themselves with ``-s``.

Measure at scale with: LEDGER_RATE_RECORDS=200000 LEDGER_RATE_BATCH=5000 \
    .venv/bin/pytest tests/sinks/test_ledger_rates.py -q -s -p no:cacheprovider
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from audit_helpers import make_decision

from core.db import make_engine
from sinks.checkpoints import CheckpointSigner
from sinks.ledger import SqlAuditSink, verify


def test_sqlite_appends_and_verifies_tens_of_thousands_of_records_a_second(
    tmp_path: Path,
) -> None:
    total = int(os.environ.get("LEDGER_RATE_RECORDS", "20000"))
    batch = int(os.environ.get("LEDGER_RATE_BATCH", "2000"))
    decisions = [make_decision(n) for n in range(1, total + 1)]
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    signer = CheckpointSigner.generate()
    sink = SqlAuditSink(engine, signer)
    began = time.perf_counter()
    for start in range(0, total, batch):
        sink.append(decisions[start : start + batch])
    append_rate = total / (time.perf_counter() - began)
    sink.close()
    began = time.perf_counter()
    report = verify(engine, signer.public_key)
    verify_rate = total / (time.perf_counter() - began)
    engine.dispose()
    print(
        f"\nSQLite ledger, {total} records in batches of {batch}: "
        f"append {append_rate:,.0f}/s, verify {verify_rate:,.0f}/s"
    )
    assert report.ok and report.records == total
    assert append_rate > 10_000
    assert verify_rate > 40_000
