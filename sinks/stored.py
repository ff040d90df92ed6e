"""A decision in the ledger's stored form: the form it is hashed in (:mod:`sinks.canonical`).

Timestamps are canonical UTC text (ISO-8601, milliseconds, ``Z``), ``categories``,
``purposes`` and ``erasure`` canonical JSON text. :func:`decision_row` converts a decoded
``lifecycle.Decision`` and refuses a malformed one, naming the field; :func:`audit_record_row`
does the same for a ``lifecycle.AuditRecord`` read back from ``privacy.audit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from sinks.exceptions import InvalidDecisionError

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
            # isoformat's text; %-formatting is twice as fast as it (and as an f-string) here
            text = _UTC_TEXTS[moment] = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031
                moment.year,
                moment.month,
                moment.day,
                moment.hour,
                moment.minute,
                moment.second,
                moment.microsecond // 1000,
            )
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
