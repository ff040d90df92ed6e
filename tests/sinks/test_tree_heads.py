"""Signed checkpoints carry the Merkle tree head of the records they cover (RFC 9162 style),
and ledgers written before tree heads existed keep verifying, and gain them as they grow."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest
from audit_helpers import drop_triggers, execute, make_decision
from sqlalchemy import Connection, Engine, text

from sinks.checkpoints import Checkpoint, CheckpointSigner, checkpoint_problem
from sinks.ledger import SqlAuditSink, audit_checkpoints, read_checkpoints, verify
from sinks.merkle import record_leaf, tree_root


def record_hashes(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT hash FROM audit_ledger ORDER BY seq")).scalars())


def checkpoints(engine: Engine) -> dict[int, Checkpoint]:
    with engine.connect() as conn:
        return read_checkpoints(conn)


def test_every_checkpoint_signs_the_merkle_root_of_the_records_up_to_it(
    engine: Engine, signer: CheckpointSigner
) -> None:
    sink = SqlAuditSink(engine, signer, checkpoint_every=7)
    for start in range(1, 41, 3):
        sink.append([make_decision(n) for n in range(start, start + 3)])
    sink.close()

    hashes = record_hashes(engine)
    signed = checkpoints(engine)
    assert len(signed) >= 5
    for seq, checkpoint in signed.items():
        assert checkpoint.tree_root == tree_root(record_leaf(h) for h in hashes[:seq]).hex()
        assert checkpoint_problem(checkpoint, {signer.key_id: signer.public_key}) is None
    report = verify(engine, signer.public_key)
    assert report.ok, report.problem
    assert report.signed_seq == 42


def test_a_changed_tree_root_breaks_its_checkpoint_signature(
    engine: Engine, signer: CheckpointSigner
) -> None:
    sink = SqlAuditSink(engine, signer, checkpoint_every=10)
    sink.append([make_decision(n) for n in range(1, 31)])
    sink.close()
    drop_triggers(engine)
    (seq,) = [s for s in checkpoints(engine) if s == 30]
    execute(
        engine,
        "UPDATE audit_checkpoints SET tree_root = :r WHERE seq = :s",
        r="ab" * 32,
        s=seq,
    )
    report = verify(engine, signer.public_key)
    assert not report.ok
    assert report.first_bad_seq == 30
    assert "invalid signature" in (report.problem or "")


def test_a_tampered_frontier_makes_the_next_head_wrong_and_verify_says_so(
    engine: Engine, signer: CheckpointSigner
) -> None:
    sink = SqlAuditSink(engine, signer, checkpoint_every=1000)
    sink.append([make_decision(n) for n in range(1, 9)])
    sink.checkpoint()  # seq 8
    drop_triggers(engine)
    execute(engine, """UPDATE audit_checkpoints SET tree_frontier = :f""", f=f'["{"cd" * 32}"]')
    sink.append([make_decision(n) for n in range(9, 12)])
    sink.close()  # signs seq 11 over a tree grown from the bad frontier
    report = verify(engine, signer.public_key)
    assert not report.ok
    assert report.first_bad_seq == 11
    assert "not the Merkle root of records 1..11" in (report.problem or "")


# --------------------------------------------------------------------------- older ledgers


class OldSink(SqlAuditSink):
    """Signs as the ledger did before tree heads: version 1 checkpoints, no tree columns."""

    def _sign(
        self,
        conn: Connection,
        seq: int,
        head_hash: str,
        now: datetime,
        recent: Sequence[bytes] = (),
    ) -> Checkpoint:
        checkpoint = self._signer.sign(seq, head_hash, now)
        conn.execute(
            audit_checkpoints.insert().values(
                seq=checkpoint.seq,
                head_hash=checkpoint.head_hash,
                signed_at=checkpoint.signed_at,
                key_id=checkpoint.key_id,
                signature=checkpoint.signature,
            )
        )
        return checkpoint


@pytest.fixture
def old_ledger(engine: Engine, signer: CheckpointSigner) -> Engine:
    """A ledger as written before tree heads: v1 checkpoints, a table without tree columns."""
    sink = OldSink(engine, signer, checkpoint_every=10)
    for start in range(1, 26, 5):
        sink.append([make_decision(n) for n in range(start, start + 5)])
    sink.close()
    with engine.begin() as conn:
        for column in ("tree_root", "tree_frontier"):
            conn.exec_driver_sql(f"ALTER TABLE audit_checkpoints DROP COLUMN {column}")
    return engine


def test_an_old_ledger_without_tree_heads_still_verifies(
    old_ledger: Engine, signer: CheckpointSigner
) -> None:
    report = verify(old_ledger, signer.public_key)
    assert report.ok, report.problem
    assert report.records == 25
    assert report.checkpoints == 3  # seq 5, 15 and 25
    assert all(c.tree_root is None for c in checkpoints(old_ledger).values())


def test_an_old_ledger_gains_tree_heads_over_all_its_records_as_it_grows(
    old_ledger: Engine, signer: CheckpointSigner
) -> None:
    sink = SqlAuditSink(old_ledger, signer, checkpoint_every=10)  # adds the tree columns
    for start in range(26, 41, 5):
        sink.append([make_decision(n) for n in range(start, start + 5)])
    sink.close()

    signed = checkpoints(old_ledger)
    assert [seq for seq, c in signed.items() if c.tree_root is None] == [5, 15, 25]
    new = [seq for seq, c in signed.items() if c.tree_root is not None]
    assert new == [35, 40]
    hashes = record_hashes(old_ledger)
    for seq in new:
        assert signed[seq].tree_root == tree_root(record_leaf(h) for h in hashes[:seq]).hex()
    report = verify(old_ledger, signer.public_key)
    assert report.ok, report.problem
    assert report.checkpoints == 5
