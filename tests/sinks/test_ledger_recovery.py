"""A ledger database restored from a backup is brought forward from ``privacy.audit``."""

from __future__ import annotations

from typing import Any

import pytest
from audit_helpers import make_decision
from confluent_kafka import Producer
from sqlalchemy import Engine

from core.db import make_engine
from sinks.checkpoints import CheckpointSigner
from sinks.exceptions import LedgerError
from sinks.ledger import SqlAuditSink, iter_records, verify
from sinks.recovery import recover_from_topic
from sinks.stored import audit_record_row
from streams.codec import SingleObjectCodec
from streams.topics import AUDIT

CODEC = SingleObjectCodec()


def publish(broker: str, records: list[dict[str, Any]]) -> None:
    """The records on privacy.audit, as the ledger stage publishes them (the fixture's broker
    has the contract's topics)."""
    producer = Producer({"bootstrap.servers": broker})
    for record in records:
        producer.produce(AUDIT, CODEC.encode("lifecycle.AuditRecord", record))
    assert producer.flush(10) == 0


def stored(engine: Engine) -> list[dict[str, Any]]:
    return [entry.as_audit_record() for entry in iter_records(engine)]


def test_records_past_the_restored_head_are_added_and_the_ledger_verifies(
    engine: Engine, another_db_url: str, signer: CheckpointSigner, broker: str
) -> None:
    original = SqlAuditSink(engine, signer)  # the live ledger before the failure
    original.append([make_decision(n) for n in range(1, 8)])
    records = stored(engine)
    publish(broker, [*records, *records[3:5]])  # at least once: some records twice

    restored_engine = make_engine(another_db_url)
    restored = SqlAuditSink(restored_engine, signer)
    rows = [audit_record_row(record) for record in records]  # the backup held the first three
    assert restored.adopt(rows[:3]) == 3

    config = {"bootstrap.servers": broker}
    assert recover_from_topic(config, CODEC, restored) == 4
    assert stored(restored_engine) == records
    report = verify(restored_engine, signer.public_key)
    assert report.ok and report.records == 7, report.summary()
    assert recover_from_topic(config, CODEC, restored) == 0  # repeatable


def test_a_database_that_went_its_own_way_is_refused_naming_the_seq(
    engine: Engine, another_db_url: str, signer: CheckpointSigner, broker: str
) -> None:
    SqlAuditSink(engine, signer).append([make_decision(n) for n in range(1, 5)])
    publish(broker, stored(engine))
    other_engine = make_engine(another_db_url)
    other = SqlAuditSink(other_engine, signer)
    other.append([make_decision(n) for n in range(101, 103)])  # other records at seqs 1-2

    with pytest.raises(LedgerError, match="record 3 does not follow"):
        recover_from_topic({"bootstrap.servers": broker}, CODEC, other)
    assert [entry.seq for entry in iter_records(other_engine)] == [1, 2]  # nothing added
