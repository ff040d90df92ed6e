"""Checking the ledger's records one seq range at a time, so that ``verify`` can spread the work
over processes: :func:`check_range` (pure) and the helper process that runs it
(``python -m sinks.range_check``).

A range is checked as ``verify`` checks the whole ledger (every hash, seq and link, in seq
order) except for the link of its first record to the record before it, which only the caller
knows: it gets the first record back (:attr:`RangeResult.first`) and checks that link itself.
For the signed checkpoints in the range, the range returns the stored hash there and the root
of the Merkle tree of its own records up to there; ranges start at a multiple of a power of two
that is at least their length, so the caller gets each checkpoint's tree head from the tree of
the records before the range and that root (:meth:`sinks.merkle.Frontier.root_with`).

The helper reads its database (SQLite file or PostgreSQL) on its own connection. It imports
only the standard library, orjson and the modules of the canonical encoding, so it starts in
a few tens of milliseconds. Protocol on stdin/stdout, one JSON object a line: first the
database (``{"sqlite": PATH}`` or ``{"postgresql": CONNINFO}``), then tasks
(:func:`task_line`), each answered by a result (:meth:`RangeResult.to_line`) or by
``{"error": TEXT}``. It stops at the end of its input.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from sinks.canonical import CANONICAL_KEYS, stored_values_digest
from sinks.chain import ChainChecker
from sinks.merkle import LEAF_PREFIX, NODE_PREFIX, Frontier

SELECT_RANGE = (
    f"SELECT {', '.join(CANONICAL_KEYS)}, hash FROM audit_ledger "
    "WHERE seq >= {0} AND seq <= {0} ORDER BY seq"
)
"""The rows of a range (the driver's parameter mark goes in the braces)."""

LOWEST_SEQ = -(2**63)
"""The lower bound of the first range: a row below seq 1 is read too, and named."""

_SEQ_AT = CANONICAL_KEYS.index("seq")
_PREV_AT = CANONICAL_KEYS.index("prev_hash")
_HASH_AT = len(CANONICAL_KEYS)


@dataclass(slots=True)
class RangeResult:
    """What checking a range found.

    ``first``: (seq, prev_hash, stored hash, computed hash or None when it cannot be encoded)
    of the range's first record, None for an empty range. ``problem``: (seq, text) of the first
    problem inside the range (its first record's link aside). ``checked``: records that passed.
    ``head``: (seq, hash, hash before it) of the last record that passed. ``checkpoints``:
    (seq, stored hash, hex root of the range's tree up to seq) for each checkpoint seq asked
    about whose record passed. ``tree``: the range's tree where it stopped (hex nodes).
    """

    first: tuple[int, str, str, str | None] | None
    problem: tuple[int, str] | None
    checked: int
    head: tuple[int, str, str | None]
    checkpoints: list[tuple[int, str, str]]
    tree_size: int
    tree_nodes: list[str]

    def to_line(self) -> bytes:
        return orjson.dumps(
            [
                self.first,
                self.problem,
                self.checked,
                self.head,
                self.checkpoints,
                self.tree_size,
                self.tree_nodes,
            ]
        )

    @classmethod
    def from_line(cls, line: bytes) -> RangeResult:
        first, problem, checked, head, checkpoints, size, nodes = orjson.loads(line)
        return cls(
            None if first is None else (int(first[0]), first[1], first[2], first[3]),
            None if problem is None else (int(problem[0]), str(problem[1])),
            int(checked),
            (int(head[0]), str(head[1]), head[2]),
            [(int(seq), str(stored), str(root)) for seq, stored, root in checkpoints],
            int(size),
            [str(node) for node in nodes],
        )


def task_line(
    first: int, last: int, checkpoints: Sequence[int], repeat: tuple[int, str] | None
) -> bytes:
    """A task for the helper: check seqs ``first``..``last``."""
    return (
        orjson.dumps(
            {"first": first, "last": last, "checkpoints": list(checkpoints), "repeat": repeat}
        )
        + b"\n"
    )


def check_range(
    rows: Iterable[Sequence[Any]],
    first_seq: int,
    checkpoint_seqs: Collection[int],
    repeat: tuple[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RangeResult:
    """Check ``rows`` (verify's columns: :data:`CANONICAL_KEYS` then ``hash``, in seq order),
    which should start at ``first_seq``; stop at the first problem.

    ``repeat`` is (seq, text) of the first record that repeats an earlier event: it fails there
    once its chain checks pass. ``progress`` is called with the records passed, every 10,000.
    """
    sha256, digest_of = hashlib.sha256, stored_values_digest
    rows = iter(rows)
    head_row = next(rows, None)
    if head_row is None:
        return RangeResult(None, None, 0, (first_seq - 1, "", None), [], 0, [])
    seq, prev_hash, stored = head_row[_SEQ_AT], head_row[_PREV_AT], head_row[_HASH_AT]
    try:
        first: tuple[int, str, str, str | None] = (
            seq,
            prev_hash,
            stored,
            digest_of(head_row).hex(),
        )
    except (TypeError, ValueError, KeyError):
        first = (seq, prev_hash, stored, None)
    # Anchored on the first record's prev_hash: the caller checks that link.
    head_seq, head_hash, before = first_seq - 1, prev_hash, None
    repeat_seq = None if repeat is None else repeat[0]
    problem: tuple[int, str] | None = None
    passed: list[tuple[int, str, str]] = []
    nodes: list[bytes] = []
    grow, shrink = nodes.append, nodes.pop
    size = checked = 0
    for values in itertools.chain((head_row,), rows):
        seq, prev_hash, stored = values[_SEQ_AT], values[_PREV_AT], values[_HASH_AT]
        try:
            digest = digest_of(values)
        except (TypeError, ValueError, KeyError) as exc:
            problem = (seq, f"record {seq} cannot be encoded (a column was altered): {exc!r}")
            break
        computed = digest.hex()
        if seq != head_seq + 1 or prev_hash != head_hash or computed != stored:
            found = ChainChecker(head_seq, head_hash, before).check(
                seq, prev_hash, stored, computed
            )
            if found is not None:
                problem = (found.seq, found.message)
                break
        before, head_hash, head_seq = head_hash, stored, seq
        if seq == repeat_seq and repeat is not None:
            problem = repeat
            break
        checked += 1
        # the record's Merkle leaf (its hash is the digest just computed), merged in
        node = sha256(LEAF_PREFIX + digest).digest()
        size += 1
        merged = size
        while not merged & 1:
            node = sha256(NODE_PREFIX + shrink() + node).digest()
            merged >>= 1
        grow(node)
        if seq in checkpoint_seqs:
            passed.append((seq, stored, Frontier(size, nodes).root().hex()))
        if progress is not None and not checked % 10_000:
            progress(checked)
    return RangeResult(
        first,
        problem,
        checked,
        (head_seq, head_hash, before),
        passed,
        size,
        [node.hex() for node in nodes],
    )


# --------------------------------------------------------------------------- the helper


def serve(tasks: BinaryIO, results: BinaryIO) -> None:
    """Answer tasks until the end of ``tasks`` (see the module's protocol)."""
    opening = tasks.readline()
    if not opening:
        return
    try:
        query = _connect(orjson.loads(opening))
    except Exception as exc:  # told to the caller, which then checks the range itself
        results.write(orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}) + b"\n")
        results.flush()
        return
    for line in tasks:
        try:
            task = orjson.loads(line)
            repeat = task["repeat"]
            result = check_range(
                query(task["first"], task["last"]),
                task["first"] if task["first"] > LOWEST_SEQ else 1,
                frozenset(task["checkpoints"]),
                None if repeat is None else (int(repeat[0]), str(repeat[1])),
            )
            answer = result.to_line()
        except Exception as exc:  # told to the caller, which then checks the range itself
            answer = orjson.dumps({"error": f"{type(exc).__name__}: {exc}"})
        results.write(answer + b"\n")
        results.flush()


def _connect(database: dict[str, str]) -> Callable[[int, int], Iterable[Sequence[Any]]]:
    """A function that reads one range's rows from ``database``."""
    if "sqlite" in database:
        import sqlite3

        connection = sqlite3.connect(database["sqlite"], timeout=30)
        connection.execute("PRAGMA query_only=ON")
        statement = SELECT_RANGE.format("?")

        def read_sqlite(first: int, last: int) -> Iterable[Sequence[Any]]:
            cursor = connection.cursor()
            cursor.arraysize = 4096
            return cursor.execute(statement, (first, last))  # type: ignore[no-any-return]

        return read_sqlite
    import psycopg

    pg = psycopg.connect(database["postgresql"], autocommit=True)
    pg_statement = SELECT_RANGE.format("%s")

    def read_postgresql(first: int, last: int) -> Iterable[Sequence[Any]]:
        return pg.execute(pg_statement, (first, last)).fetchall()  # type: ignore[arg-type]

    return read_postgresql


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
