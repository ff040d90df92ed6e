"""``audit verify`` over the database: every hash and link in seq order, and every signed
checkpoint, stopping at the first problem.

On a ledger larger than one range (:data:`RANGE_SIZE` records) and more than one core, the
records are checked in ranges by helper processes (:mod:`sinks.range_check`), each reading its
own ranges, and the ranges' results are joined here in seq order: each range's first link is
checked against the end of the range before it, each checkpoint against the Merkle tree of all
records up to it. The first problem found in that order is the one a single pass finds.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import selectors
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    Connection,
    Engine,
    func,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from sinks.canonical import CANONICAL_KEYS
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
from sinks.range_check import LOWEST_SEQ, SELECT_RANGE, RangeResult, check_range, task_line

RANGE_SIZE = 4096
"""Records a helper checks at a time (a power of two: see :mod:`sinks.range_check`)."""

_VERIFY_COLUMNS = [audit_ledger.c[name] for name in CANONICAL_KEYS] + [audit_ledger.c.hash]


_SQLITE_VERIFY = f"SELECT {', '.join(CANONICAL_KEYS)}, hash FROM audit_ledger ORDER BY seq"


def verify(
    engine: Engine,
    public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey],
    *,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 20_000,
    jobs: int | None = None,
    range_size: int | None = None,
) -> VerifyReport:
    """Check the whole ledger: every hash and link in seq order, and every signed checkpoint.

    Reads one snapshot (server-side cursor on PostgreSQL) and stops at the first problem: a
    changed record, a missing one (removed), an inserted one, a reordered pair, an event
    recorded twice, a checkpoint whose signature fails (forged, or another key) or whose head
    differs from the chain, or a tail cut off below the head or a checkpoint.

    ``first_bad_seq`` is the first seq at which the stored ledger is provably inconsistent.
    A tamperer who re-computed hashes can hide earlier changes back to the last checkpoint
    that still matches; the problem text then names that range. ``public_key`` may be several
    keys (after a rotation). ``progress`` is called with the number of records checked so far.

    ``jobs`` processes check the records (default: the usable cores) when the ledger holds
    more than ``range_size`` records (a power of two; default :data:`RANGE_SIZE`) and lives
    in a SQLite file or in PostgreSQL through psycopg: helper processes read ranges of the
    records up to the last seq of this snapshot (records are never changed, so theirs are the
    same) and the results are joined in seq order; the outcome is the one of a single pass.
    """
    range_size = RANGE_SIZE if range_size is None else range_size
    if range_size < 1 or range_size & (range_size - 1):
        raise ValueError("range_size must be a power of two")
    keys = [public_key] if isinstance(public_key, Ed25519PublicKey) else list(public_key)
    key_ids = {key_id_of(key): key for key in keys}
    jobs = usable_cores() if jobs is None else max(1, jobs)
    helpers: list[_Helper] = []
    try:
        with reading(engine) as conn:
            require_ledger(conn)
            last_seq = int(conn.execute(select(func.max(audit_ledger.c.seq))).scalar() or 0)
            database = _helper_database(engine)
            if jobs > 1 and last_seq > range_size and database is not None:
                helpers = _start_helpers(database, jobs)
            checkpoints = read_checkpoints(conn)
            head_row = conn.execute(select(audit_chain_head.c.seq, audit_chain_head.c.hash)).first()
            repeat = _first_repeated_event(conn)
            if helpers:
                results = _in_helpers(
                    helpers, conn, last_seq, range_size, checkpoints, repeat, progress
                )
                size: int | None = range_size
            else:
                results = [
                    check_range(
                        _stream_for_verify(conn, batch_size), 1, checkpoints, repeat, progress
                    )
                ]
                size = None
            return _join(results, size, checkpoints, head_row, key_ids, progress)
    except SQLAlchemyError as exc:
        raise ledger_error(exc, "verify") from exc
    finally:
        for helper in helpers:
            helper.stop()


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


def _read_range(conn: Connection, first: int, last: int) -> Iterable[Sequence[Any]]:
    """The records of seqs ``first``..``last`` on this process's own connection."""
    if conn.dialect.name == "sqlite":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        return cursor.execute(SELECT_RANGE.format("?"), (first, last))  # type: ignore[no-any-return]
    return conn.execute(
        select(*_VERIFY_COLUMNS)
        .where(audit_ledger.c.seq >= first, audit_ledger.c.seq <= last)
        .order_by(audit_ledger.c.seq)
    )


# --------------------------------------------------------------------------- joining ranges


def _join(
    results: Iterable[RangeResult],
    range_size: int | None,
    checkpoints: dict[int, Checkpoint],
    head_row: Sequence[Any] | None,
    key_ids: dict[str, Ed25519PublicKey],
    progress: Callable[[int], None] | None,
) -> VerifyReport:
    """The report of the ranges' results, taken in seq order (ranges of ``range_size`` seqs
    aligned on multiples of it; None: one range, the whole ledger)."""
    checker = ChainChecker()
    tree = Frontier()  # the Merkle tree of the whole ranges checked so far
    checked = 0
    signed_seq = 0  # last checkpoint that matched the chain
    signed = 0

    def report(
        first_bad: int | None = None,
        problem: str | None = None,
        at: tuple[int, str] | None = None,
        records: int | None = None,
    ) -> VerifyReport:
        head_seq, head_hash = at or (checker.head_seq, checker.head_hash)
        return VerifyReport(
            ok=problem is None,
            records=checked if records is None else records,
            checkpoints=signed,
            first_bad_seq=first_bad,
            problem=problem,
            head_seq=head_seq,
            head_hash=head_hash,
            signed_seq=signed_seq,
        )

    for result in results:
        if result.first is not None:
            seq, prev_hash, stored, computed = result.first
            if computed is None and result.problem is not None:
                return report(*result.problem)  # the first record cannot be encoded
            # the link into the range (inside it, the range checked the same things)
            found = checker.check(seq, prev_hash, stored, computed or "")
            if found is not None:
                return report(found.seq, found.message)
        for seq, stored, range_root in result.checkpoints:
            # records up to seq all passed: seq of them, seq the last
            at = (seq, stored)
            checkpoint = checkpoints[seq]
            bad_signature = checkpoint_problem(checkpoint, key_ids)
            if bad_signature is not None:
                return report(seq, bad_signature, at, seq)
            if checkpoint.head_hash != stored:
                return report(
                    seq,
                    f"record {seq} does not match the signed checkpoint at seq {seq} (signed "
                    f"head {checkpoint.head_hash}, chain has {stored}): it was rewritten, "
                    f"possibly with records back to seq {signed_seq + 1} (the chain was "
                    "re-hashed), or the checkpoint was signed over a wrong head",
                    at,
                    seq,
                )
            root = tree.root_with(bytes.fromhex(range_root))
            if checkpoint.tree_root is not None and checkpoint.tree_root != root.hex():
                return report(
                    seq,
                    f"the tree head signed at seq {seq} (root {checkpoint.tree_root}) is not "
                    f"the Merkle root of records 1..{seq}: it was signed over a wrong tree",
                    at,
                    seq,
                )
            signed_seq = seq
            signed += 1
        if result.problem is not None:
            head_seq, head_hash, _ = result.head
            return report(*result.problem, (head_seq, head_hash), checked + result.checked)
        checked += result.checked
        if result.first is not None:
            checker = ChainChecker(*result.head)
        if range_size is not None and result.tree_size == range_size:
            tree.append_tree(bytes.fromhex(result.tree_nodes[0]), range_size)
        # a shorter range is the last, or records are missing at its end: the next link fails
    if progress is not None:
        progress(checked)
    return _end_of_chain(checker, checkpoints, head_row, key_ids, report)


def _end_of_chain(
    checker: ChainChecker,
    checkpoints: dict[int, Checkpoint],
    head_row: Sequence[Any] | None,
    key_ids: dict[str, Ed25519PublicKey],
    report: Callable[[int | None, str | None], VerifyReport],
) -> VerifyReport:
    """After the last record: no checkpoint beyond it, and the head row names it."""
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
    return report(None, None)


# --------------------------------------------------------------------------- helper processes


def _helper_database(engine: Engine) -> dict[str, str] | None:
    """How a helper process opens this engine's database; None when it cannot."""
    url = engine.url
    if engine.dialect.name == "sqlite":
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:") or url.query:
            return None
        return {"sqlite": str(Path(path).resolve())}
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return {
            "postgresql": url.set(drivername="postgresql").render_as_string(hide_password=False)
        }
    return None


class _Helper:
    """One helper process (``python -m sinks.range_check``) and the tasks sent to it."""

    __slots__ = ("buffer", "process", "task")

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.task = -1  # the index of the range it is checking
        self.buffer = b""

    @classmethod
    def start(cls, database: dict[str, str]) -> _Helper:
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds sinks/
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(  # this interpreter, a module of ours
            [sys.executable, "-m", "sinks.range_check"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        helper = cls(process)
        helper.send(orjson.dumps(database) + b"\n")
        return helper

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout

    def send(self, line: bytes) -> bool:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except OSError:
            return False
        return True

    def lines(self) -> list[bytes]:
        """The whole lines that have arrived (when the selector says there is something);
        raises EOFError when the helper has ended."""
        chunk = os.read(self.stdout.fileno(), 1 << 16)
        if not chunk:
            raise EOFError
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        return complete

    def stop(self) -> None:
        """End it at once: it only reads, and its interpreter's shutdown would cost more
        than a small verify."""
        process = self.process
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _start_helpers(database: dict[str, str], count: int) -> list[_Helper]:
    """``count`` helpers; none when one cannot be started (this process checks alone)."""
    helpers: list[_Helper] = []
    try:
        for _ in range(count):
            helpers.append(_Helper.start(database))
    except OSError:
        for helper in helpers:
            helper.stop()
        return []
    return helpers


def _in_helpers(
    helpers: list[_Helper],
    conn: Connection,
    last_seq: int,
    range_size: int,
    checkpoints: dict[int, Checkpoint],
    repeat: tuple[int, str] | None,
    progress: Callable[[int], None] | None,
) -> list[RangeResult]:
    """Check seqs up to ``last_seq`` in ranges of ``range_size``, in the helpers; the results
    in seq order, up to the first range that found a problem. A range a helper could not
    check (it failed or ended) is checked here."""
    count = -(-last_seq // range_size)
    bounds = [
        (LOWEST_SEQ if i == 0 else i * range_size + 1, min((i + 1) * range_size, last_seq))
        for i in range(count)
    ]
    marks = sorted(checkpoints)

    def task(index: int) -> bytes:
        low, high = bounds[index]
        inside = [seq for seq in marks if max(low, 1) <= seq <= high]
        return task_line(low, high, inside, repeat)

    results: list[RangeResult | None] = [None] * count
    pending = list(range(count))  # a heap: the lowest range first
    upto = count  # ranges after the first one with a problem are not needed
    done = 0
    idle = list(helpers)
    selector = selectors.DefaultSelector()

    def dispatch() -> None:
        while idle and pending and pending[0] < upto:
            helper, index = idle.pop(), heapq.heappop(pending)
            if helper.send(task(index)):
                helper.task = index
                selector.register(helper.stdout, selectors.EVENT_READ, helper)
            else:  # it ended: left out from now on
                heapq.heappush(pending, index)

    try:
        dispatch()
        while selector.get_map():
            for key, _ in selector.select():
                helper = key.data
                try:
                    lines = helper.lines()
                except (EOFError, OSError):
                    lines = [b'{"error": "ended"}']
                if not lines:
                    continue  # part of a line so far
                selector.unregister(helper.stdout)
                index, helper.task = helper.task, -1
                if lines[0].startswith(b'{"error"'):  # left out from now on
                    heapq.heappush(pending, index)
                    continue
                result = results[index] = RangeResult.from_line(lines[0])
                done += result.checked
                if result.problem is not None:
                    upto = min(upto, index + 1)
                idle.append(helper)
                if progress is not None:
                    progress(done)
            dispatch()
    finally:
        selector.close()
    out: list[RangeResult] = []
    for index in range(min(upto, count)):
        checked = results[index]
        if checked is None:  # no helper left to check it
            low, high = bounds[index]
            inside = [seq for seq in marks if max(low, 1) <= seq <= high]
            checked = check_range(_read_range(conn, low, high), max(low, 1), inside, repeat)
        out.append(checked)
        if checked.problem is not None:
            break
    return out
