"""The canonical encoding of a ledger record and its hash, which link the records in one chain.

Canonical encoding (version 1)
------------------------------
A record is hashed as one flat JSON object holding exactly these 22 keys::

    actor_role categories consent_granted decided_at decision erasure event_id kind
    occurred_at policy_version prev_hash purpose purposes reason_code recipient recorded_at
    rule seq source source_offset source_partition subject_ref

i.e. the 19 fields of ``lifecycle.Decision`` plus ``seq``, ``prev_hash`` and ``recorded_at`` of
``lifecycle.AuditRecord``. The object (and the ``erasure`` object inside it) has its keys sorted,
no whitespace (``,`` and ``:`` separators), strings escaped as JSON requires and non-ASCII text
written as UTF-8; arrays keep their order; absent optional values are ``null`` (an absent
``purposes`` is ``[]``, its schema default). Timestamps are
text: ISO-8601 in UTC with exactly three decimals and a ``Z``, e.g. ``2025-03-01T09:30:00.125Z``
(the millisecond precision of Avro's ``timestamp-millis``; finer digits are truncated).
``hash`` is the lowercase hex SHA-256 of those UTF-8 bytes; ``prev_hash`` is the ``hash`` of the
record before, and 64 zeros (:data:`GENESIS_HASH`) for ``seq`` 1. Python's standard library
produces the same bytes with
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``, so an
auditor can recompute any hash from an exported line (drop ``hash``, encode, SHA-256).

Adding a field to ``lifecycle.Decision`` changes this encoding: it needs a version 2 of it,
not a silent change (a test compares the schema with :data:`DECISION_FIELDS`).

The ledger stores each record in exactly this form (timestamps as that text, ``categories``
and ``erasure`` as their canonical JSON text), so the bytes hashed are the bytes stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sinks.stored import DECISION_FIELDS

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record (``seq`` 1)."""


CANONICAL_KEYS = tuple(sorted((*DECISION_FIELDS, "seq", "prev_hash", "recorded_at")))
"""The keys of the hashed object, in the order they are encoded."""


_BOOLEAN = {0: False, 1: True}  # SQLite hands booleans back as 0/1


_Fragment = orjson.Fragment


_sha256 = hashlib.sha256


def canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The canonical encoding (version 1) of a stored record (``hash`` itself is ignored).

    Raises TypeError or KeyError when a value cannot be part of a record (see
    :func:`encode_canonical`, which this spells out key by key, in order, for speed).
    """
    granted, erasure = row["consent_granted"], row["erasure"]
    return orjson.dumps(
        {
            "actor_role": row["actor_role"],
            "categories": _Fragment(row["categories"]),
            "consent_granted": granted if granted is None else _BOOLEAN[granted],
            "decided_at": row["decided_at"],
            "decision": row["decision"],
            "erasure": erasure if erasure is None else _Fragment(erasure),
            "event_id": row["event_id"],
            "kind": row["kind"],
            "occurred_at": row["occurred_at"],
            "policy_version": row["policy_version"],
            "prev_hash": row["prev_hash"],
            "purpose": row["purpose"],
            "purposes": _Fragment(row["purposes"]),
            "reason_code": row["reason_code"],
            "recipient": row["recipient"],
            "recorded_at": row["recorded_at"],
            "rule": row["rule"],
            "seq": row["seq"],
            "source": row["source"],
            "source_offset": row["source_offset"],
            "source_partition": row["source_partition"],
            "subject_ref": row["subject_ref"],
        }
    )


def stored_values_digest(values: Sequence[Any]) -> bytes:
    """SHA-256 (the 32 raw bytes) of a stored record given as its :data:`CANONICAL_KEYS` values in
    that order followed by its stored ``hash`` (ignored): a row of ``verify``'s SELECT.

    The same bytes as :func:`canonical_bytes`; raises TypeError, KeyError or ValueError when
    a value cannot be part of a record.
    """
    (
        actor_role,
        categories,
        granted,
        decided_at,
        decision,
        erasure,
        event_id,
        kind,
        occurred_at,
        policy_version,
        prev_hash,
        purpose,
        purposes,
        reason_code,
        recipient,
        recorded_at,
        rule,
        seq,
        source,
        source_offset,
        source_partition,
        subject_ref,
        _hash,
    ) = values
    return _sha256(
        orjson.dumps(
            {
                "actor_role": actor_role,
                "categories": _Fragment(categories),
                "consent_granted": granted if granted is None else _BOOLEAN[granted],
                "decided_at": decided_at,
                "decision": decision,
                "erasure": erasure if erasure is None else _Fragment(erasure),
                "event_id": event_id,
                "kind": kind,
                "occurred_at": occurred_at,
                "policy_version": policy_version,
                "prev_hash": prev_hash,
                "purpose": purpose,
                "purposes": _Fragment(purposes),
                "reason_code": reason_code,
                "recipient": recipient,
                "recorded_at": recorded_at,
                "rule": rule,
                "seq": seq,
                "source": source,
                "source_offset": source_offset,
                "source_partition": source_partition,
                "subject_ref": subject_ref,
            }
        )
    ).digest()


def stored_values_hash(values: Sequence[Any]) -> str:
    """:func:`stored_values_digest` as lowercase hex: the ``hash`` the record must have."""
    return stored_values_digest(values).hex()


def encode_canonical(document: dict[str, Any]) -> bytes:
    """Encode a stored record given as exactly :data:`CANONICAL_KEYS`, in that order.

    Changes ``document`` in place (the JSON-text columns become fragments). Raises TypeError or
    KeyError when a value cannot be part of a record (e.g. a NULL where text is required).
    """
    document["categories"] = orjson.Fragment(document["categories"])
    document["purposes"] = orjson.Fragment(document["purposes"])
    if document["erasure"] is not None:
        document["erasure"] = orjson.Fragment(document["erasure"])
    if document["consent_granted"] is not None:
        document["consent_granted"] = _BOOLEAN[document["consent_granted"]]
    return orjson.dumps(document)


def flat_canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The canonical encoding of a record given as one mapping of exactly
    :data:`CANONICAL_KEYS`, in any order, in its stored form except that ``categories`` and
    ``purposes`` are lists of strings and ``erasure`` is None: the same bytes as
    :func:`canonical_bytes` (orjson sorts the keys)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def canonical_hash(encoded: bytes) -> str:
    """The ``hash`` of a record from its canonical encoding: SHA-256, lowercase hex."""
    return _sha256(encoded).hexdigest()


def export_hash(record: Mapping[str, Any]) -> str:
    """What the ``hash`` of an exported record (an ``audit export`` JSON line, or the record
    in a bundle or receipt) must be: the hash of the record without ``hash``, encoded
    canonically. Raises TypeError when a value cannot be JSON."""
    return canonical_hash(flat_canonical_bytes({k: v for k, v in record.items() if k != "hash"}))


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 (lowercase hex) of the record's canonical encoding."""
    return _sha256(canonical_bytes(row)).hexdigest()


def chain_rows(
    rows: list[dict[str, Any]],
    head_seq: int,
    head_hash: str,
    recorded_at: str,
    digests: list[bytes] | None = None,
) -> tuple[int, str]:
    """Give ``rows`` (stored form) the next seqs after the head, link and hash them in place;
    with ``digests``, append each record's hash there as its 32 raw bytes (for the Merkle tree).

    Returns the new head (seq, hash).
    """
    keep = None if digests is None else digests.append
    for row in rows:
        head_seq += 1
        row["seq"] = head_seq
        row["prev_hash"] = head_hash
        row["recorded_at"] = recorded_at
        digest = _sha256(_row_bytes(row)).digest()
        head_hash = row["hash"] = digest.hex()
        if keep is not None:
            keep(digest)
    return head_seq, head_hash


_CANONICAL_COUNT = len(CANONICAL_KEYS)


def _row_bytes(row: dict[str, Any]) -> bytes:
    """:func:`canonical_bytes` of a row holding exactly the canonical keys: a copy of it
    (C speed) with the JSON-text columns as fragments, keys sorted by orjson."""
    if len(row) != _CANONICAL_COUNT or "hash" in row:
        return canonical_bytes(row)
    document = row.copy()
    document["categories"] = _Fragment(document["categories"])
    document["purposes"] = _Fragment(document["purposes"])
    erasure, granted = document["erasure"], document["consent_granted"]
    if erasure is not None:
        document["erasure"] = _Fragment(erasure)
    if granted is not None:
        document["consent_granted"] = _BOOLEAN[granted]
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
