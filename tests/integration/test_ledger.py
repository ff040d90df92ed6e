"""The audit ledger on the running pipeline: exactly once, verifiable, replayable."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from sqlalchemy import text

from lifecycle.db import make_engine
from lifecycle.traffic import Traffic
from streams.codec import SingleObjectCodec

from fixtures.broker import Workers, audit_records, run_cli
from integration.scenario import PERSONAL, SCENARIO, lines

CODEC = SingleObjectCodec()


def traffic_file(tmp_path: Path, count: int, subjects: int = 300) -> Path:
    path = tmp_path / "traffic.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in Traffic(subjects).events(count)))
    return path


def ledger_counts(env: dict[str, str]) -> tuple[int, int, int]:
    """(rows, distinct event ids, max seq) of the ledger."""
    engine = make_engine(f"sqlite:///{Path(env['LIFECYCLE_DATA_DIR']) / 'lifecycle.sqlite'}")
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT count(*), count(DISTINCT event_id), max(seq) FROM audit_ledger")
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def test_replay_after_an_erasure_shows_no_personal_data_and_still_verifies(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines()).returncode == 0
    audit_records(broker, CODEC, len(SCENARIO))
    erased = run_cli(lifecycle_env, "erase", "C-70001", "--wait", "--timeout", "60")
    assert erased.returncode == 0, erased.stderr.decode()

    replay = run_cli(lifecycle_env, "audit", "replay", "--from-beginning")
    assert replay.returncode == 0, replay.stderr.decode()
    records = [json.loads(line) for line in replay.stdout.decode().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(SCENARIO) + 2))
    assert records[-1]["kind"] == "deletion_requested"
    exported = run_cli(lifecycle_env, "audit", "export", "--format", "jsonl").stdout
    for output in (replay.stdout, exported, replay.stderr):
        for secret in [*PERSONAL.values(), "C-70001"]:
            assert secret.encode() not in output
    verify = run_cli(lifecycle_env, "audit", "verify")
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()


def test_a_worker_killed_mid_batch_leaves_exactly_one_record_per_event(
    workers: Workers, lifecycle_env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    count = 4000
    path = traffic_file(tmp_path, count)
    first = workers.start()
    assert run_cli(lifecycle_env, "publish", str(path)).returncode == 0
    audit_records(broker, CODEC, 300, timeout=120)  # the worker is mid-stream
    first.stop(signal.SIGKILL)

    workers.start()
    audit_records(broker, CODEC, count, timeout=240)

    assert ledger_counts(lifecycle_env) == (count, count, count)
    verify = run_cli(lifecycle_env, "audit", "verify")
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()


@pytest.mark.parametrize("size", [2, 3])
def test_several_workers_share_the_partitions_and_build_one_ledger_that_verifies(
    size: int, workers: Workers, lifecycle_env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    count = 3000
    path = traffic_file(tmp_path, count)
    group = [workers.start() for _ in range(size)]
    for worker in group:
        worker.wait_for_log("[^Worker]: Ready", 90)
    assert run_cli(lifecycle_env, "publish", str(path)).returncode == 0

    records = audit_records(broker, CODEC, count, timeout=240)

    assert {r["decision"]["source_partition"] for r in records} == {0, 1, 2, 3}
    for worker in group:
        assert '"event": "batch.decided"' in worker.log()
    assert ledger_counts(lifecycle_env) == (count, count, count)
    verify = run_cli(lifecycle_env, "audit", "verify")
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
