"""Receipts: one ledger record with the proof that it is in a signed tree head, checkable by
anyone holding the ledger's public key and nothing else (``lifecycle audit prove`` and
``lifecycle audit check-receipt``).

A receipt is one JSON object (``"format": "lifecycle.audit.receipt.v1"``):

``record``
    the record as ``audit export`` writes it; its ``hash`` is SHA-256 of the record without
    ``hash``, canonically encoded (sorted keys, no whitespace, UTF-8).
``tree_head``
    ``tree_size``, ``root`` (hex) and the ``checkpoint`` that signs them: ``seq`` (= the tree
    size), ``head_hash``, ``signed_at``, ``key_id`` and the Ed25519 ``signature`` over the
    version 2 checkpoint statement (:mod:`sinks.checkpoints`).
``inclusion``
    ``leaf_index`` (``seq`` - 1) and ``path``, the RFC 9162 inclusion proof (2.1.3) of the
    leaf ``SHA-256(0x00 || bytes of record hash)`` in that tree (:mod:`sinks.merkle`).
``consistency``
    optional: RFC 9162 consistency proofs (2.1.4) from older tree heads (``from_tree_size``,
    ``from_root``, ``path``), made with ``prove --consistent-with OLDER``, so that
    ``check-receipt THIS --consistent-with OLDER`` shows the older head to be a prefix of
    this one: no record it covered was changed, removed or inserted since.

Records hold pseudonyms and policy names, never personal data: a receipt can be handed to the
customer an erasure confirmation is about.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from sinks.canonical import export_hash
from sinks.checkpoints import STATEMENT_V2, Checkpoint, checkpoint_problem
from sinks.entry import AuditEntry
from sinks.exceptions import LedgerError
from sinks.ledger import (
    audit_checkpoints,
    audit_ledger,
    reading,
    require_ledger,
)
from sinks.ledger.tables import checkpoint_of, ledger_error
from sinks.merkle import (
    Frontier,
    consistency_ranges,
    inclusion_ranges,
    range_hashes,
    record_leaf,
    verify_consistency,
    verify_inclusion,
)

RECEIPT_FORMAT = "lifecycle.audit.receipt.v1"
HOW_TO_CHECK = (
    "record.hash = SHA-256 of the record without 'hash' as canonical JSON (sorted keys, no "
    "whitespace, UTF-8); leaf = SHA-256(0x00 || record.hash as 32 bytes); inclusion.path is "
    "an RFC 9162 (2.1.3) inclusion proof of that leaf at leaf_index in the tree of tree_size "
    "leaves whose root is tree_head.root; tree_head.checkpoint.signature is Ed25519 over the "
    "canonical JSON of {head_hash, key_id, seq, signed_at, statement: "
    f"'{STATEMENT_V2}', tree_root, tree_size}}; consistency paths are RFC 9162 (2.1.4) "
    "consistency proofs. Check it with: lifecycle audit check-receipt FILE --public-key KEY"
)


class ReceiptError(LedgerError):
    """A receipt cannot be made from this ledger (names why)."""


class RewrittenHistoryError(ReceiptError):
    """The ledger does not extend the tree head of an older receipt: its history differs."""


# --------------------------------------------------------------------------- making


def find_erasure(engine: Engine, request_id: str) -> list[int]:
    """Seqs of the records of erasure request ``request_id``, oldest first."""
    found = []
    try:
        with engine.connect() as conn:
            require_ledger(conn)
            rows = conn.execute(
                select(audit_ledger.c.seq, audit_ledger.c.erasure)
                .where(audit_ledger.c.erasure.is_not(None))
                .where(
                    audit_ledger.c.erasure.contains(
                        orjson.dumps(request_id).decode(), autoescape=True
                    )
                )
                .order_by(audit_ledger.c.seq)
            )
            for seq, erasure in rows:
                if orjson.loads(erasure).get("request_id") == request_id:
                    found.append(int(seq))
    except SQLAlchemyError as exc:
        raise ledger_error(exc, "read") from exc
    return found


def make_receipt(
    engine: Engine, seq: int, *, older: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The receipt of record ``seq`` against the newest signed tree head.

    With ``older`` (a receipt made before), also a consistency proof from its tree head; raises
    :class:`RewrittenHistoryError` when this ledger's first records are not that tree.
    """
    try:
        with reading(engine) as conn:
            require_ledger(conn)
            return _make(conn, seq, older)
    except SQLAlchemyError as exc:
        raise ledger_error(exc, "read") from exc


def _make(conn: Connection, seq: int, older: Mapping[str, Any] | None) -> dict[str, Any]:
    row = conn.execute(select(audit_ledger).where(audit_ledger.c.seq == seq)).first()
    if row is None:
        raise ReceiptError(f"the ledger holds no record at seq {seq}")
    entry = AuditEntry(dict(row._mapping))
    head = _newest_tree_head(conn)
    if head is None:
        raise ReceiptError(
            "the ledger has no signed tree head yet (checkpoints sign one from this version "
            "on; a running worker signs the next within a minute)"
        )
    size = head.seq
    if size < seq:
        raise ReceiptError(
            f"record {seq} is not yet covered by a signed tree head (the newest covers records "
            f"1..{size}); the workers sign one every 1000 records or 60 seconds: try again"
        )
    path = range_hashes(inclusion_ranges(seq - 1, size), _leaves(conn, size))
    root = bytes.fromhex(str(head.tree_root))
    if not verify_inclusion(seq - 1, size, record_leaf(entry.hash), path, root):
        raise ReceiptError(
            f"the ledger's records 1..{size} do not have the Merkle root signed at seq {size}: "
            "the ledger was altered (run lifecycle audit verify)"
        )
    receipt: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "record": entry.as_export(),
        "tree_head": _tree_head(head),
        "inclusion": {"leaf_index": seq - 1, "path": [node.hex() for node in path]},
        "consistency": [],
        "how_to_check": HOW_TO_CHECK,
    }
    if older is not None:
        receipt["consistency"].append(_consistency_from(conn, older, size, root))
    return receipt


def _consistency_from(
    conn: Connection, older: Mapping[str, Any], size: int, root: bytes
) -> dict[str, Any]:
    try:
        old_size = int(older["tree_head"]["tree_size"])
        old_root = str(older["tree_head"]["root"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReceiptError(f"the older receipt has no readable tree head ({exc})") from None
    if old_size > size:
        raise ReceiptError(
            f"the older receipt's tree ({old_size} records) is larger than this ledger's newest "
            f"signed tree head ({size} records)"
        )
    if old_size < 1:
        raise ReceiptError("the older receipt's tree head is empty")
    prefix = Frontier()
    prefix.extend(leaf for _, leaf in _leaves(conn, old_size))
    if prefix.root().hex() != old_root:
        raise RewrittenHistoryError(
            f"this ledger's records 1..{old_size} have Merkle root {prefix.root().hex()}, but "
            f"the older receipt's signed tree head has {old_root}: the ledger's history was "
            "rewritten since that receipt (or it is from another ledger)"
        )
    path = range_hashes(consistency_ranges(old_size, size), _leaves(conn, size))
    if not verify_consistency(old_size, size, prefix.root(), root, path):
        raise ReceiptError("the consistency proof does not hold: run lifecycle audit verify")
    return {
        "from_tree_size": old_size,
        "from_root": old_root,
        "path": [node.hex() for node in path],
    }


def _newest_tree_head(conn: Connection) -> Checkpoint | None:
    columns = {column["name"] for column in inspect(conn).get_columns("audit_checkpoints")}
    if "tree_root" not in columns:
        return None
    c = audit_checkpoints.c
    row = conn.execute(
        select(c.seq, c.head_hash, c.signed_at, c.key_id, c.signature, c.tree_root)
        .where(c.tree_root.is_not(None))
        .order_by(c.seq.desc())
        .limit(1)
    ).first()
    return None if row is None else checkpoint_of(dict(row._mapping))


def _leaves(conn: Connection, size: int) -> Iterator[tuple[int, bytes]]:
    rows = conn.execute(
        select(audit_ledger.c.seq, audit_ledger.c.hash)
        .where(audit_ledger.c.seq <= size)
        .order_by(audit_ledger.c.seq)
        .execution_options(yield_per=20_000)
    )
    for seq, record_hash in rows:
        yield int(seq) - 1, record_leaf(record_hash)


def _tree_head(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "tree_size": checkpoint.seq,
        "root": checkpoint.tree_root,
        "checkpoint": {
            "statement": STATEMENT_V2,
            "seq": checkpoint.seq,
            "head_hash": checkpoint.head_hash,
            "signed_at": checkpoint.signed_at,
            "key_id": checkpoint.key_id,
            "signature": checkpoint.signature,
        },
    }


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    """The outcome of checking a receipt (or two): ``ok`` and one line saying what held, or
    what failed first. ``checkable`` is False when the receipts cannot settle the question
    (no consistency proof between them): neither proven nor refuted."""

    ok: bool
    message: str
    checkable: bool = True


class _Bad(Exception):
    pass


def check_receipt(
    receipt: Mapping[str, Any],
    public_keys: Mapping[str, Ed25519PublicKey],
) -> ReceiptCheck:
    """Check one receipt with nothing but the public keys (key id -> key)."""
    try:
        return ReceiptCheck(True, _check(receipt, public_keys))
    except _Bad as exc:
        return ReceiptCheck(False, str(exc))


def check_consistency(
    newer: Mapping[str, Any],
    older: Mapping[str, Any],
    public_keys: Mapping[str, Ed25519PublicKey],
) -> ReceiptCheck:
    """Check both receipts, then that the smaller tree head is a prefix of the larger one."""
    for name, receipt in (("receipt", newer), ("older receipt", older)):
        single = check_receipt(receipt, public_keys)
        if not single.ok:
            return ReceiptCheck(False, f"{name}: {single.message}")
    small, big = sorted((older, newer), key=lambda r: int(r["tree_head"]["tree_size"]))
    m, n = int(small["tree_head"]["tree_size"]), int(big["tree_head"]["tree_size"])
    small_root, big_root = str(small["tree_head"]["root"]), str(big["tree_head"]["root"])
    if m == n:
        if small_root != big_root:
            return ReceiptCheck(
                False,
                f"INCONSISTENT: two tree heads of size {m} with different roots: the ledger's "
                "history was rewritten",
            )
        return ReceiptCheck(True, f"consistent: both receipts sign the same tree of {m} records")
    proofs = [p for p in big.get("consistency") or [] if _size_of(p) == m]
    if not proofs:
        return ReceiptCheck(
            False,
            f"cannot tell: the receipt of tree size {n} carries no consistency proof from tree "
            f"size {m}; make it with: lifecycle audit prove --seq N --consistent-with OLDER",
            checkable=False,
        )
    proof = proofs[0]
    try:
        path = [bytes.fromhex(node) for node in proof["path"]]
        claimed = str(proof["from_root"])
    except (KeyError, TypeError, ValueError) as exc:
        return ReceiptCheck(False, f"the consistency proof is not readable ({exc})")
    if claimed != small_root or not verify_consistency(
        m, n, bytes.fromhex(small_root), bytes.fromhex(big_root), path
    ):
        return ReceiptCheck(
            False,
            f"INCONSISTENT: the tree head of {m} records (root {small_root}) is not a prefix "
            f"of the tree head of {n} records (root {big_root}): the ledger's history was "
            "rewritten between them",
        )
    return ReceiptCheck(
        True,
        f"consistent: the tree of {m} records is a prefix of the tree of {n} records "
        "(nothing it covered was changed, removed or inserted)",
    )


def _size_of(proof: Any) -> int | None:
    try:
        return int(proof["from_tree_size"])
    except (KeyError, TypeError, ValueError):
        return None


def _check(receipt: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str:
    if not isinstance(receipt, Mapping) or receipt.get("format") != RECEIPT_FORMAT:
        raise _Bad(f"not a receipt (expected format {RECEIPT_FORMAT!r})")
    try:
        record = receipt["record"]
        seq = int(record["seq"])
        claimed_hash = str(record["hash"])
        head = receipt["tree_head"]
        size, root = int(head["tree_size"]), str(head["root"])
        signed = head["checkpoint"]
        checkpoint = checkpoint_of({**signed, "tree_root": root})
        index = int(receipt["inclusion"]["leaf_index"])
        path = [bytes.fromhex(node) for node in receipt["inclusion"]["path"]]
        leaf = record_leaf(claimed_hash)
        root_bytes = bytes.fromhex(root)
    except (KeyError, TypeError, ValueError) as exc:
        raise _Bad(f"the receipt is incomplete or garbled ({type(exc).__name__}: {exc})") from None
    try:
        recomputed = export_hash(record)
    except TypeError as exc:
        raise _Bad(f"record {seq} cannot be encoded: {exc}") from None
    if recomputed != claimed_hash:
        raise _Bad(f"record {seq} was changed: its content does not hash to its hash")
    if checkpoint.seq != size:
        raise _Bad(f"the tree head says {size} records but is signed for seq {checkpoint.seq}")
    problem = checkpoint_problem(checkpoint, dict(keys))
    if problem is not None:
        raise _Bad(f"the tree head's signature does not hold: {problem}")
    if index != seq - 1:
        raise _Bad(f"the inclusion proof is for leaf {index}, not record {seq} (leaf {seq - 1})")
    if not verify_inclusion(index, size, leaf, path, root_bytes):
        raise _Bad(
            f"record {seq} is not proven in the signed tree of {size} records: the inclusion "
            "proof does not lead to its root"
        )
    return (
        f"ok: record {seq} ({record.get('kind')}, event {record.get('event_id')}) is in the "
        f"ledger's tree of {size} records, root {root}, signed at {checkpoint.signed_at} "
        f"by key {checkpoint.key_id}"
    )


def load_receipt(text: bytes) -> dict[str, Any]:
    """A receipt from its file's bytes; raises ValueError when it is not a JSON object."""
    try:
        receipt = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(receipt, dict):
        raise ValueError("not a JSON object")
    return receipt


def dump_receipt(receipt: Mapping[str, Any]) -> bytes:
    return orjson.dumps(receipt, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


__all__ = [
    "RECEIPT_FORMAT",
    "ReceiptCheck",
    "ReceiptError",
    "RewrittenHistoryError",
    "check_consistency",
    "check_receipt",
    "dump_receipt",
    "find_erasure",
    "load_receipt",
    "make_receipt",
]
