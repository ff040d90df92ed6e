"""The audit ledger on the running pipeline: exactly once, verifiable, replayable."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import text

from core.db import make_engine
from lifecycle.traffic import Traffic
from streams.app import APP_ID
from streams.codec import SingleObjectCodec
from streams.topics import AUDIT, DEAD_LETTERS, DECISIONS

from fixtures.broker import LIFECYCLE, REPO, Workers, audit_records, read_topic, run_cli
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


def produce_to_partition(
    bootstrap: str, topic: str, partition: int, values: list[bytes]
) -> list[int]:
    """Produce ``values`` to one partition, in order; their offsets."""
    producer = Producer({"bootstrap.servers": bootstrap})
    offsets: list[int] = []

    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        offsets.append(message.offset())

    for value in values:
        producer.produce(topic, value, b"not-a-subject", partition=partition, on_delivery=delivered)
    assert producer.flush(30) == 0
    return offsets


def committed_offset(bootstrap: str, group: str, topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [position] = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return int(position.offset)
    finally:
        consumer.close()


def test_decisions_the_ledger_cannot_decode_are_dead_lettered_and_the_ledger_goes_on(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    events = [e for e, _ in SCENARIO]
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(events[:5])).returncode == 0
    audit_records(broker, CODEC, 5)

    moment = datetime(2026, 3, 1, 9, tzinfo=UTC)
    wrongly_shaped = CODEC.encode(  # valid Avro, but no event_id: the ledger refuses it
        "lifecycle.Decision",
        {
            "event_id": "",
            "kind": "used",
            "subject_ref": "ab" * 32,
            "source": "crm",
            "categories": ["email"],
            "decision": "allow",
            "reason_code": "allowed",
            "rule": "forged",
            "policy_version": "2018-08-01",
            "occurred_at": moment,
            "decided_at": moment,
            "source_partition": -1,
            "source_offset": -1,
        },
    )
    another_schema = CODEC.encode(
        "lifecycle.KeyRevocation",
        {"subject_ref": "ab" * 32, "categories": ["email"], "revoked_at": moment},
    )
    bad = [b"\x00garbage, not a decision", another_schema, wrongly_shaped]
    offsets = produce_to_partition(broker, DECISIONS, 1, bad)

    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(events[5:])).returncode == 0
    records = audit_records(broker, CODEC, len(SCENARIO))
    assert {r["decision"]["event_id"] for r in records} == {e["event_id"] for e in events}

    letters = read_topic(broker, DEAD_LETTERS, min_count=len(bad), timeout=60)
    assert len(letters) == len(bad)
    by_offset = {int(dict(m.headers())["lifecycle.source.offset"]): m for m in letters}
    assert sorted(by_offset) == offsets
    errors = []
    for offset in offsets:
        headers = dict(by_offset[offset].headers())
        assert headers["lifecycle.source.topic"] == DECISIONS.encode()
        assert headers["lifecycle.source.partition"] == b"1"
        assert b"garbage" not in by_offset[offset].value()  # sealed, not copied
        errors.append(headers["lifecycle.error"].decode())
    assert "not an Avro single-object record" in errors[0]
    assert "record is a lifecycle.KeyRevocation, expected a lifecycle.Decision" in errors[1]
    assert "event_id" in errors[2]
    assert ledger_counts(lifecycle_env) == (len(SCENARIO),) * 3
    verify = run_cli(lifecycle_env, "audit", "verify")
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()

    deadline = time.monotonic() + 30  # the ledger commits after each durable batch
    while committed_offset(broker, f"{APP_ID}-ledger", DECISIONS, 1) <= offsets[-1]:
        assert time.monotonic() < deadline, "the ledger did not commit past the dead letters"
        time.sleep(0.5)


class Follower:
    """``lifecycle audit replay`` running as a subprocess; its stdout lines as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [LIFECYCLE, "audit", "replay", *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            if self.process.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"replay exited: {self.stderr()}")
            assert time.monotonic() < deadline, f"{len(self.lines)} of {count} records printed"
            time.sleep(0.1)
        return list(self.lines)

    def stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read().decode()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C, as an analyst stops it
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)
        return self.process.returncode


def assert_one_chain(records: list[dict[str, Any]]) -> None:
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]


def test_audit_replay_follow_prints_appended_records_verified_until_stopped(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    events = [e for e, _ in SCENARIO]
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(events[:9])).returncode == 0
    audit_records(broker, CODEC, 9)

    analyst = Follower(lifecycle_env, "--from-beginning", "--follow")
    try:
        assert_one_chain(analyst.wait_for(9))
        assert run_cli(lifecycle_env, "publish", "-", stdin=lines(events[9:])).returncode == 0
        printed = analyst.wait_for(len(SCENARIO))
        time.sleep(1)  # nothing more, nothing twice (privacy.audit is at-least-once)
        assert analyst.lines == printed
        assert_one_chain(printed)
        assert [r["event_id"] for r in printed] == [e["event_id"] for e in events]
        text = json.dumps(printed)
        for secret in [*PERSONAL.values(), "C-70001"]:
            assert secret not in text
        assert analyst.process.poll() is None  # still following
    finally:
        code = analyst.stop()
    assert code == 0

    # it verifies as it follows: a forged record appended to privacy.audit stops it
    watcher = Follower(lifecycle_env, "--from-beginning", "--follow")
    try:
        last = watcher.wait_for(len(SCENARIO))[-1]
        stored = (
            CODEC.decode("lifecycle.AuditRecord", m.value()) for m in read_topic(broker, AUDIT)
        )
        genuine = next(record for record in stored if record["seq"] == last["seq"])
        forged = {**genuine, "seq": last["seq"] + 1, "prev_hash": "0" * 64}
        produce_to_partition(broker, AUDIT, 0, [CODEC.encode("lifecycle.AuditRecord", forged)])
        watcher.process.wait(30)
    finally:
        watcher.stop()
    assert watcher.process.returncode == 1
    assert f"TAMPERED at seq {last['seq'] + 1}" in watcher.stderr()
    assert len(watcher.lines) == len(SCENARIO)  # the forged record was not printed
