"""``audit verify`` over the database: every hash and link in seq order, and every signed
checkpoint, in one read snapshot, stopping at the first problem."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    Connection,
    Engine,
    func,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from sinks.canonical import CANONICAL_KEYS, stored_values_hash
from sinks.chain import ChainChecker, VerifyReport
from sinks.checkpoints import (
    Checkpoint,
    checkpoint_problem,
    key_id_of,
)
from sinks.ledger.queries import read_checkpoints, reading, require_ledger
from sinks.ledger.tables import (
    IN_CHUNK,
    audit_chain_head,
    audit_ledger,
    ledger_error,
)
from sinks.merkle import Frontier

_VERIFY_COLUMNS = [audit_ledger.c[name] for name in CANONICAL_KEYS] + [audit_ledger.c.hash]


_SQLITE_VERIFY = f"SELECT {', '.join(CANONICAL_KEYS)}, hash FROM audit_ledger ORDER BY seq"


_SEQ_AT = CANONICAL_KEYS.index("seq")


_PREV_AT = CANONICAL_KEYS.index("prev_hash")


_HASH_AT = len(CANONICAL_KEYS)


def verify(
    engine: Engine,
    public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey],
    *,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 20_000,
) -> VerifyReport:
    """Check the whole ledger: every hash and link in seq order, and every signed checkpoint.

    Streams the records (server-side cursor on PostgreSQL) in one read snapshot and stops at
    the first problem: a changed record, a missing one (removed), an inserted one, a reordered
    pair, an event recorded twice, a checkpoint whose signature fails (forged, or another key)
    or whose head differs from the chain, or a tail cut off below the head or a checkpoint.

    ``first_bad_seq`` is the first seq at which the stored ledger is provably inconsistent.
    A tamperer who re-computed hashes can hide earlier changes back to the last checkpoint
    that still matches; the problem text then names that range. ``public_key`` may be several
    keys (after a rotation). ``progress`` is called with the number of records checked so far.
    """
    keys = [public_key] if isinstance(public_key, Ed25519PublicKey) else list(public_key)
    key_ids = {key_id_of(key): key for key in keys}
    try:
        with reading(engine) as conn:
            require_ledger(conn)
            checkpoints = read_checkpoints(conn)
            head_row = conn.execute(select(audit_chain_head.c.seq, audit_chain_head.c.hash)).first()
            result = _stream_for_verify(conn, batch_size)
            repeat = _first_repeated_event(conn)
            return _walk(result, checkpoints, head_row, key_ids, progress, repeat)
    except SQLAlchemyError as exc:
        raise ledger_error(exc, "verify") from exc


def _first_repeated_event(conn: Connection) -> tuple[int, str] | None:
    """(seq, problem) of the first record whose event_id an earlier record already has.

    The unique index makes this impossible through the ledger; it catches a database whose
    index was dropped. One pass over the event_id index.
    """
    repeated = (
        conn.execute(
            select(audit_ledger.c.event_id)
            .group_by(audit_ledger.c.event_id)
            .having(func.count() > 1)
            .limit(IN_CHUNK)
        )
        .scalars()
        .all()
    )
    first: tuple[int, str] | None = None
    for event_id in repeated:
        seqs = (
            conn.execute(
                select(audit_ledger.c.seq)
                .where(audit_ledger.c.event_id == event_id)
                .order_by(audit_ledger.c.seq)
            )
            .scalars()
            .all()
        )
        if first is None or seqs[1] < first[0]:
            problem = (
                f"record {seqs[1]} repeats event {event_id!r}, already recorded at seq {seqs[0]}"
            )
            first = (int(seqs[1]), problem)
    return first


def _stream_for_verify(conn: Connection, batch_size: int) -> Iterable[Sequence[Any]]:
    """Every record as (canonical columns..., hash), in seq order, streamed."""
    if conn.dialect.name == "sqlite":
        # straight from the driver: SQLite is in-process, so its rows are the bottleneck
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.arraysize = batch_size
        return cursor.execute(_SQLITE_VERIFY)  # type: ignore[no-any-return]
    return conn.execute(  # a server-side cursor
        select(*_VERIFY_COLUMNS)
        .order_by(audit_ledger.c.seq)
        .execution_options(yield_per=batch_size)
    )


def _walk(
    result: Iterable[Sequence[Any]],
    checkpoints: dict[int, Checkpoint],
    head_row: Sequence[Any] | None,
    key_ids: dict[str, Ed25519PublicKey],
    progress: Callable[[int], None] | None,
    repeat: tuple[int, str] | None,
) -> VerifyReport:
    checker = ChainChecker()
    checked = 0
    signed_seq = 0  # last checkpoint that matched the chain
    signed = 0

    def report(first_bad: int | None = None, problem: str | None = None) -> VerifyReport:
        return VerifyReport(
            ok=problem is None,
            records=checked,
            checkpoints=signed,
            first_bad_seq=first_bad,
            problem=problem,
            head_seq=checker.head_seq,
            head_hash=checker.head_hash,
            signed_seq=signed_seq,
        )

    check, hash_of, checkpoint_at = checker.check, stored_values_hash, checkpoints.get
    repeat_seq = None if repeat is None else repeat[0]
    tree = Frontier()  # the Merkle tree of the records checked up to the last checkpoint
    leaves: list[str] = []  # the hashes checked since: the tree takes them at a checkpoint
    grow = leaves.append
    for values in result:
        seq, stored = values[_SEQ_AT], values[_HASH_AT]
        try:
            computed = hash_of(values)
        except (TypeError, ValueError, KeyError) as exc:
            return report(seq, f"record {seq} cannot be encoded (a column was altered): {exc!r}")
        problem = check(seq, values[_PREV_AT], stored, computed)
        if problem is not None:
            return report(problem.seq, problem.message)
        if seq == repeat_seq and repeat is not None:
            return report(seq, repeat[1])
        checked += 1
        grow(stored)
        checkpoint = checkpoint_at(seq)
        if checkpoint is not None:
            tree.extend_records(leaves)
            leaves.clear()
            bad_signature = checkpoint_problem(checkpoint, key_ids)
            if bad_signature is not None:
                return report(seq, bad_signature)
            if checkpoint.head_hash != stored:
                return report(
                    seq,
                    f"record {seq} does not match the signed checkpoint at seq {seq} (signed "
                    f"head {checkpoint.head_hash}, chain has {stored}): it was rewritten, "
                    f"possibly with records back to seq {signed_seq + 1} (the chain was "
                    "re-hashed), or the checkpoint was signed over a wrong head",
                )
            if checkpoint.tree_root is not None and checkpoint.tree_root != tree.root().hex():
                return report(
                    seq,
                    f"the tree head signed at seq {seq} (root {checkpoint.tree_root}) is not "
                    f"the Merkle root of records 1..{seq}: it was signed over a wrong tree",
                )
            signed_seq = seq
            signed += 1
        if progress is not None and checked % 10_000 == 0:
            progress(checked)
    if progress is not None:
        progress(checked)
    last = checker.head_seq
    for seq in sorted(s for s in checkpoints if s > last):
        bad_signature = checkpoint_problem(checkpoints[seq], key_ids)
        if bad_signature is not None:
            return report(seq, bad_signature)
        return report(
            last + 1,
            f"the ledger ends at seq {last} but a signed checkpoint covers seq {seq}: "
            f"records {last + 1}..{seq} were removed",
        )
    if head_row is None:
        return report(last + 1, "the chain head row was deleted")
    head_seq, head_hash = int(head_row[0]), str(head_row[1])
    if head_seq > last:
        return report(
            last + 1,
            f"the ledger ends at seq {last} but its head is at seq {head_seq}: "
            f"records {last + 1}..{head_seq} were removed",
        )
    if head_seq < last:
        return report(
            head_seq + 1,
            f"records {head_seq + 1}..{last} lie beyond the chain head (seq {head_seq}): "
            "they were not appended by the ledger",
        )
    if head_hash != checker.head_hash:
        return report(last, f"the chain head names hash {head_hash} for seq {last}, not its hash")
    return report()
