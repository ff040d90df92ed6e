"""The hash chain of the audit ledger: canonical encoding, hashing, and the checks shared by
``verify`` (reading the database) and :class:`ChainFollower` (reading ``privacy.audit``).

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
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from sinks.exceptions import InvalidDecisionError

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record (``seq`` 1)."""

DECISION_FIELDS = (
    "event_id",
    "kind",
    "subject_ref",
    "source",
    "categories",
    "purpose",
    "purposes",
    "consent_granted",
    "recipient",
    "actor_role",
    "decision",
    "reason_code",
    "rule",
    "policy_version",
    "occurred_at",
    "decided_at",
    "source_partition",
    "source_offset",
    "erasure",
)
"""The fields of ``lifecycle.Decision`` that the canonical encoding (version 1) covers."""

CANONICAL_KEYS = tuple(sorted((*DECISION_FIELDS, "seq", "prev_hash", "recorded_at")))
"""The keys of the hashed object, in the order they are encoded."""

VERDICTS = frozenset({"allow", "deny"})

_REQUIRED_TEXT = (
    "event_id",
    "kind",
    "subject_ref",
    "source",
    "reason_code",
    "rule",
    "policy_version",
)
_OPTIONAL_TEXT = ("purpose", "recipient", "actor_role")
_RETAINED_FIELDS = ("category", "basis", "until")


# --------------------------------------------------------------------------- time as text


_UTC_TEXTS: dict[datetime, str] = {}
_UTC_TEXTS_MAX = 4096


def utc_text(moment: datetime) -> str:
    """``moment`` as canonical text: ISO-8601, UTC, milliseconds, ``Z``. Refuses naive times."""
    if moment.tzinfo is UTC and type(moment) is datetime:
        # A batch's decisions share a few instants (decided_at, recorded_at): remember them.
        # Only plain UTC datetimes, whose equality is that of their text.
        text = _UTC_TEXTS.get(moment)
        if text is None:
            if len(_UTC_TEXTS) >= _UTC_TEXTS_MAX:
                _UTC_TEXTS.clear()
            text = _UTC_TEXTS[moment] = moment.isoformat(timespec="milliseconds")[:-6] + "Z"
        return text
    if moment.tzinfo is not UTC:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"naive datetime {moment.isoformat()} (a time zone is required)")
        moment = moment.astimezone(UTC)
    # isoformat pads the year to 4 digits and ends in "+00:00" for UTC
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_utc_text(text: str) -> datetime:
    """The aware datetime of a canonical timestamp text."""
    return datetime.fromisoformat(text)


def truncate_millis(moment: datetime) -> datetime:
    """``moment`` in UTC, cut to whole milliseconds (what the ledger and Avro keep)."""
    m = moment.astimezone(UTC)
    return m.replace(microsecond=m.microsecond // 1000 * 1000)


# --------------------------------------------------------------------------- stored form


def decision_row(decision: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """A decoded ``lifecycle.Decision`` in the ledger's stored (and hashed) form.

    Raises :class:`InvalidDecisionError` naming ``index`` and the field when it is malformed.
    """
    try:
        row = _fast_row(decision)
    except (KeyError, TypeError, ValueError, AttributeError):
        row = None
    if row is None:
        _raise_what_is_wrong(decision, index)
        raise InvalidDecisionError(index, None, "decision", "not a valid lifecycle.Decision")
    return row


def _is_text_list(values: Any) -> bool:
    if type(values) is not list and type(values) is not tuple:
        return False
    for value in values:  # noqa: SIM110 - a loop: twice as fast as all() over a generator
        if type(value) is not str:
            return False
    return True


def _fast_row(decision: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored form, or None when anything is off (the slow path then says what).

    Unrolled on purpose: this runs once per decision on the append path.
    """
    get = decision.get
    event_id, kind, subject_ref = decision["event_id"], decision["kind"], decision["subject_ref"]
    source, reason_code, rule = decision["source"], decision["reason_code"], decision["rule"]
    policy_version, verdict = decision["policy_version"], decision["decision"]
    purpose, recipient, actor_role = get("purpose"), get("recipient"), get("actor_role")
    categories, purposes, granted = (
        decision["categories"],
        get("purposes", ()),
        get("consent_granted"),
    )
    partition, offset = decision["source_partition"], decision["source_offset"]
    occurred, decided = decision["occurred_at"], decision["decided_at"]
    text = str
    if not (
        type(event_id) is text
        and type(kind) is text
        and type(subject_ref) is text
        and type(source) is text
        and type(reason_code) is text
        and type(rule) is text
        and type(policy_version) is text
        and event_id
        and kind
        and subject_ref
        and source
        and reason_code
        and rule
        and policy_version
        and (purpose is None or type(purpose) is text)
        and (recipient is None or type(recipient) is text)
        and (actor_role is None or type(actor_role) is text)
        and verdict in VERDICTS
        and (granted is None or type(granted) is bool)
        and type(partition) is int
        and type(offset) is int
        and _is_text_list(categories)
        and _is_text_list(purposes)
        and isinstance(occurred, datetime)
        and isinstance(decided, datetime)
    ):
        return None
    erasure = get("erasure")
    return {
        "event_id": event_id,
        "kind": kind,
        "subject_ref": subject_ref,
        "source": source,
        "reason_code": reason_code,
        "rule": rule,
        "policy_version": policy_version,
        "purpose": purpose,
        "recipient": recipient,
        "actor_role": actor_role,
        "decision": verdict,
        "categories": orjson.dumps(categories).decode(),
        "purposes": orjson.dumps(purposes).decode(),
        "consent_granted": granted,
        "occurred_at": utc_text(occurred),
        "decided_at": utc_text(decided),
        "source_partition": partition,
        "source_offset": offset,
        "erasure": None if erasure is None else _erasure_text(erasure, _not_valid),
    }


def _not_valid(field: str, message: str) -> ValueError:
    return ValueError(f"{field}: {message}")


def _raise_what_is_wrong(decision: object, index: int) -> None:
    """Raise :class:`InvalidDecisionError` naming the first field that is wrong."""
    event_id = decision.get("event_id") if isinstance(decision, Mapping) else None

    def fail(field: str, message: str) -> InvalidDecisionError:
        return InvalidDecisionError(index, event_id, field, message)

    if not isinstance(decision, Mapping):
        raise fail("decision", f"expected a mapping, got {type(decision).__name__}")
    for name in _REQUIRED_TEXT:
        value = decision.get(name)
        if not isinstance(value, str) or not value:
            raise fail(name, "missing" if value is None else "must be a non-empty string")
    for name in _OPTIONAL_TEXT:
        if decision.get(name) is not None and not isinstance(decision.get(name), str):
            raise fail(name, "must be a string or null")
    if decision.get("decision") not in VERDICTS:
        raise fail("decision", f"must be 'allow' or 'deny', got {decision.get('decision')!r}")
    if not _is_text_list(decision.get("categories")):
        raise fail("categories", "must be a list of strings")
    if not _is_text_list(decision.get("purposes", ())):
        raise fail("purposes", "must be a list of strings")
    granted = decision.get("consent_granted")
    if granted is not None and not isinstance(granted, bool):
        raise fail("consent_granted", "must be true, false or null")
    for name in ("occurred_at", "decided_at"):
        value = decision.get(name)
        if not isinstance(value, datetime):
            raise fail(name, "must be a datetime")
        try:
            utc_text(value)
        except ValueError as exc:
            raise fail(name, str(exc)) from None
    for name in ("source_partition", "source_offset"):
        value = decision.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(name, "must be an integer")
    _erasure_text(decision.get("erasure"), fail)


def _erasure_text(erasure: object, fail: Any) -> str | None:
    if erasure is None:
        return None
    if not isinstance(erasure, Mapping):
        raise fail("erasure", "must be a record or null")
    out: dict[str, Any] = {}
    for name in ("request_id", "status"):
        if not isinstance(erasure.get(name), str):
            raise fail(f"erasure.{name}", "must be a string")
        out[name] = erasure[name]
    shredded = erasure.get("shredded")
    if not isinstance(shredded, list | tuple) or not all(isinstance(c, str) for c in shredded):
        raise fail("erasure.shredded", "must be a list of strings")
    out["shredded"] = list(shredded)
    retained = erasure.get("retained")
    if not isinstance(retained, list | tuple):
        raise fail("erasure.retained", "must be a list")
    kept = []
    for item in retained:
        if not isinstance(item, Mapping) or not all(
            isinstance(item.get(k), str) for k in _RETAINED_FIELDS
        ):
            raise fail("erasure.retained", "each entry needs string category, basis and until")
        kept.append({k: item[k] for k in _RETAINED_FIELDS})
    out["retained"] = kept
    return orjson.dumps(out, option=orjson.OPT_SORT_KEYS).decode()


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


def stored_values_hash(values: Sequence[Any]) -> str:
    """SHA-256 (lowercase hex) of a stored record given as its :data:`CANONICAL_KEYS` values in
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
    ).hexdigest()


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
    in a bundle or receipt) must be: SHA-256 of the record without ``hash``, encoded
    canonically. Raises TypeError when a value cannot be JSON."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return _sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 (lowercase hex) of the record's canonical encoding."""
    return _sha256(canonical_bytes(row)).hexdigest()


def chain_rows(
    rows: list[dict[str, Any]], head_seq: int, head_hash: str, recorded_at: str
) -> tuple[int, str]:
    """Give ``rows`` (stored form) the next seqs after the head, link and hash them in place.

    Returns the new head (seq, hash).
    """
    for row in rows:
        head_seq += 1
        row["seq"] = head_seq
        row["prev_hash"] = head_hash
        row["recorded_at"] = recorded_at
        head_hash = row["hash"] = row_hash(row)
    return head_seq, head_hash


# --------------------------------------------------------------------------- entries


class AuditEntry:
    """One stored ledger record (read-only); what ``append`` returns and ``iter_records`` yields."""

    __slots__ = ("_row",)

    def __init__(self, row: dict[str, Any]) -> None:
        self._row = row  # the stored form; the entry owns it from here on

    @property
    def seq(self) -> int:
        return int(self._row["seq"])

    @property
    def prev_hash(self) -> str:
        return str(self._row["prev_hash"])

    @property
    def hash(self) -> str:
        return str(self._row["hash"])

    @property
    def event_id(self) -> str:
        return str(self._row["event_id"])

    @property
    def subject_ref(self) -> str:
        return str(self._row["subject_ref"])

    @property
    def recorded_at(self) -> datetime:
        return parse_utc_text(self._row["recorded_at"])

    def stored(self) -> dict[str, Any]:
        """The record exactly as stored (column name -> value)."""
        return dict(self._row)

    def decision(self) -> dict[str, Any]:
        """The ``lifecycle.Decision`` value it records (timestamps as aware datetimes)."""
        row = self._row
        out = {name: row[name] for name in DECISION_FIELDS}
        out["categories"] = orjson.loads(row["categories"])
        out["purposes"] = orjson.loads(row["purposes"])
        out["erasure"] = None if row["erasure"] is None else orjson.loads(row["erasure"])
        out["occurred_at"] = parse_utc_text(row["occurred_at"])
        out["decided_at"] = parse_utc_text(row["decided_at"])
        return out

    def as_audit_record(self) -> dict[str, Any]:
        """The ``lifecycle.AuditRecord`` value to publish on ``privacy.audit``."""
        return {
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "recorded_at": self.recorded_at,
            "decision": self.decision(),
        }

    def as_export(self) -> dict[str, Any]:
        """A flat JSON-ready object: the canonical fields (timestamps as text) plus ``hash``."""
        row = self._row
        return {
            "seq": row["seq"],
            "event_id": row["event_id"],
            "kind": row["kind"],
            "subject_ref": row["subject_ref"],
            "decision": row["decision"],
            "reason_code": row["reason_code"],
            "policy_version": row["policy_version"],
            "occurred_at": row["occurred_at"],
            "decided_at": row["decided_at"],
            "recorded_at": row["recorded_at"],
            "source": row["source"],
            "actor_role": row["actor_role"],
            "purpose": row["purpose"],
            "purposes": orjson.loads(row["purposes"]),
            "consent_granted": row["consent_granted"],
            "recipient": row["recipient"],
            "categories": orjson.loads(row["categories"]),
            "rule": row["rule"],
            "erasure": None if row["erasure"] is None else orjson.loads(row["erasure"]),
            "source_partition": row["source_partition"],
            "source_offset": row["source_offset"],
            "prev_hash": row["prev_hash"],
            "hash": row["hash"],
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuditEntry) and self._row == other._row

    def __hash__(self) -> int:
        return hash((self._row["seq"], self._row["hash"]))

    def __repr__(self) -> str:
        return f"AuditEntry(seq={self.seq}, event_id={self.event_id!r}, hash={self.hash[:12]}...)"


def audit_record_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of a decoded ``lifecycle.AuditRecord`` (raises ValueError when malformed)."""
    try:
        row = decision_row(record["decision"])
        seq = record["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("seq is not an integer")
        row["seq"] = seq
        row["prev_hash"] = str(record["prev_hash"])
        row["hash"] = str(record["hash"])
        row["recorded_at"] = utc_text(record["recorded_at"])
    except (KeyError, TypeError, AttributeError, InvalidDecisionError) as exc:
        raise ValueError(f"malformed audit record: {exc}") from exc
    return row


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Where a chain first goes wrong, and what is wrong there."""

    seq: int
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of checking a ledger (or a replayed stream).

    ``first_bad_seq`` is the first seq at which the records are provably inconsistent;
    ``problem`` says what was found there. ``head_seq``/``head_hash`` are those of the last
    record that verified; ``signed_seq`` is the seq of the last signed checkpoint that matched
    the chain.
    """

    ok: bool
    records: int
    checkpoints: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    signed_seq: int = 0

    def summary(self) -> str:
        """One line for a human: what was checked, and the first problem if any."""
        if self.ok:
            unsigned = self.head_seq - self.signed_seq
            tail = f", {unsigned} after it not yet signed" if unsigned else ""
            return (
                f"ok: {self.records} records, {self.checkpoints} signed checkpoints verified; "
                f"head seq {self.head_seq} hash {self.head_hash}; "
                f"last checkpoint at seq {self.signed_seq}{tail}"
            )
        return f"TAMPERED at seq {self.first_bad_seq}: {self.problem}"


class ChainChecker:
    """Walks records in seq order and names the first one that breaks the chain.

    Checks, per record: its seq follows the last one (no gap, no repeat), its ``prev_hash``
    names the record before it, and its stored ``hash`` is the hash of its content. A record
    whose ``prev_hash`` names the record two back is reported as an insertion of the one
    between. When two records that each hash correctly do not link, the earlier one is named:
    its hash is not the one its successor recorded (it was rewritten together with its hash,
    or records between them were removed).
    """

    __slots__ = ("_before", "head_hash", "head_seq")

    def __init__(self, head_seq: int = 0, head_hash: str = GENESIS_HASH) -> None:
        self.head_seq = head_seq
        self.head_hash = head_hash
        self._before: str | None = None  # hash of the record before the head, when known

    def check(
        self, seq: int, prev_hash: str, stored_hash: str, computed_hash: str
    ) -> ChainProblem | None:
        """Check the next record; advance past it when it is sound, else say what is wrong."""
        expected = self.head_seq + 1
        if seq != expected:
            if seq < expected:
                return ChainProblem(seq, f"record {seq} appears again after record {self.head_seq}")
            missing = (
                f"record {expected} is"
                if seq == expected + 1
                else (f"records {expected}..{seq - 1} are")
            )
            return ChainProblem(expected, f"{missing} missing (removed): the next is {seq}")
        if prev_hash != self.head_hash:
            if self.head_seq >= 1 and prev_hash == self._before:
                return ChainProblem(
                    self.head_seq,
                    f"record {self.head_seq} was inserted: record {seq} names record "
                    f"{self.head_seq - 1} as its predecessor",
                )
            if computed_hash != stored_hash:
                return ChainProblem(
                    seq,
                    f"record {seq} was altered or moved here: its content does not match its "
                    f"hash, and its prev_hash does not name record {self.head_seq}",
                )
            if self.head_seq == 0:
                return ChainProblem(
                    seq,
                    f"record {seq} does not start the chain (its prev_hash is not the "
                    "genesis hash): records before it were removed",
                )
            return ChainProblem(
                self.head_seq,
                f"record {seq} does not link to record {self.head_seq}: record "
                f"{self.head_seq} was rewritten, or records between them were removed",
            )
        if computed_hash != stored_hash:
            return ChainProblem(
                seq, f"record {seq} was altered: its content does not match its hash"
            )
        self._before, self.head_hash, self.head_seq = self.head_hash, stored_hash, seq
        return None


class ChainFollower:
    """Checks a stream of ``lifecycle.AuditRecord`` values incrementally (``audit replay``).

    Records may arrive out of order within ``window`` seqs and may be delivered more than once:
    a repeat with the same seq and the same (correct) hash is counted and ignored, a repeat
    that differs is a problem. A seq still missing when records ``window`` past it have
    arrived (or at :meth:`finish`) is a gap. After the first problem the follower stops: it
    keeps that problem and checks nothing more.

    By default the stream must start at seq 1 (genesis). ``start_seq``/``start_hash`` resume
    after a known record (e.g. one a signed checkpoint vouches for); ``anchor_on_first`` trusts
    the first record received as the start (a ``--follow`` from the live end) and ignores any
    lower seq that comes later.

    Pure: no I/O, no clock.
    """

    def __init__(
        self,
        *,
        window: int = 10_000,
        start_seq: int = 0,
        start_hash: str = GENESIS_HASH,
        anchor_on_first: bool = False,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._window = window
        self._checker = ChainChecker(start_seq, start_hash)
        self._anchor = anchor_on_first
        self._pending: dict[int, tuple[Any, str, str, str]] = {}
        self._max_pending = 0
        self._recent: dict[int, str] = {}  # seq -> hash of verified records, ascending
        self.problem: ChainProblem | None = None
        self.verified = 0
        self.duplicates = 0

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def head_seq(self) -> int:
        """Seq of the last record verified (0: none yet)."""
        return self._checker.head_seq

    @property
    def head_hash(self) -> str:
        return self._checker.head_hash

    @property
    def pending(self) -> int:
        """Records received ahead of a gap, waiting for the missing ones."""
        return len(self._pending)

    def feed(self, record: Mapping[str, Any], item: Any = None) -> list[Any]:
        """Take one record (a decoded ``lifecycle.AuditRecord``); return what this made
        verified, in seq order: each record's ``item`` (by default the record itself)."""
        if self.problem is not None:
            return []
        try:
            row = audit_record_row(record)
        except ValueError as exc:
            seq = record.get("seq") if isinstance(record, Mapping) else None
            at = seq if isinstance(seq, int) else self.head_seq + 1
            self.problem = ChainProblem(at, f"record {at} cannot be read: {exc}")
            return []
        return self.feed_hashed(
            record if item is None else item,
            row["seq"],
            row["prev_hash"],
            row["hash"],
            row_hash(row),
        )

    def feed_hashed(
        self, item: Any, seq: int, prev_hash: str, stored_hash: str, computed_hash: str
    ) -> list[Any]:
        """:meth:`feed` for a record the caller has read and hashed: its ``seq``, ``prev_hash``
        and stored ``hash``, and ``computed_hash`` of its content in the canonical encoding
        (as :func:`audit_record_row` and :func:`row_hash` would give). Returns the ``item`` of
        each record this made verified, in seq order."""
        if self.problem is not None:
            return []
        if self._anchor:
            self._anchor = False
            self._checker = ChainChecker(seq - 1, prev_hash)
        checker = self._checker
        if seq == checker.head_seq + 1 and not self._pending:  # in order: the usual case
            problem = checker.check(seq, prev_hash, stored_hash, computed_hash)
            if problem is not None:
                self.problem = problem
                return []
            self._remember(seq, stored_hash)
            self.verified += 1
            return [item]
        if seq <= checker.head_seq or seq in self._pending:
            known = self._recent_hash(seq) if seq <= checker.head_seq else self._pending[seq][2]
            if known is None or (known == stored_hash and computed_hash == stored_hash):
                self.duplicates += 1  # a redelivery (or older than the window: not checkable)
                return []
            self.problem = ChainProblem(
                seq, f"record {seq} was delivered twice with different content"
            )
            return []
        self._pending[seq] = (item, prev_hash, stored_hash, computed_hash)
        self._max_pending = max(self._max_pending, seq)
        verified: list[Any] = []
        while checker.head_seq + 1 in self._pending:
            next_seq = checker.head_seq + 1
            next_item, next_prev, next_stored, next_computed = self._pending.pop(next_seq)
            problem = checker.check(next_seq, next_prev, next_stored, next_computed)
            if problem is not None:
                self.problem = problem
                return verified
            self._remember(next_seq, next_stored)
            self.verified += 1
            verified.append(next_item)
        if self._pending and self._max_pending - checker.head_seq > self._window:
            self.problem = self._gap()
        return verified

    def finish(self) -> VerifyReport:
        """End of the stream: the report (a seq still missing is a gap)."""
        if self.problem is None and self._pending:
            self.problem = self._gap()
        return VerifyReport(
            ok=self.problem is None,
            records=self.verified,
            checkpoints=0,
            first_bad_seq=None if self.problem is None else self.problem.seq,
            problem=None if self.problem is None else self.problem.message,
            head_seq=self.head_seq,
            head_hash=self.head_hash,
        )

    def _gap(self) -> ChainProblem:
        missing = self.head_seq + 1
        after = min(self._pending)
        return ChainProblem(
            missing, f"record {missing} is missing: the stream went on to {after} and beyond"
        )

    def _remember(self, seq: int, hash_: str) -> None:
        """Keep the hash of a verified record (seqs arrive here one by one, ascending)."""
        recent = self._recent
        recent[seq] = hash_
        if len(recent) > 2 * self._window:  # forget all but the window, now and then
            self._recent = dict(itertools.islice(recent.items(), len(recent) - self._window, None))

    def _recent_hash(self, seq: int) -> str | None:
        """The hash of verified record ``seq`` if it is one of the last ``window`` verified."""
        return self._recent.get(seq) if self.head_seq - seq < self._window else None
