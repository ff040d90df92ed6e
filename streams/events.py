"""The input format (JSON lines, see CONTRACT.md) and its validation.

:func:`parse_line` turns one line into a :class:`InputEvent` or raises
:class:`~streams.exceptions.ValidationError` naming the field. Error messages never repeat a
value from the input: they may be logged or printed, and the input is personal data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from streams.exceptions import ValidationError

KINDS = ("collected", "used", "shared", "deletion_requested", "consent_changed")
MAX_LINE_BYTES = 1 << 20
MAX_VALUE_CHARS = 16_384
MAX_ID_CHARS = 128
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_COMMON = {"kind", "event_id", "occurred_at", "source", "subject_id", "actor"}
_PER_KIND = {
    "collected": {"channel", "purposes", "data"},
    "used": {"categories", "purpose"},
    "shared": {"categories", "recipient", "purpose"},
    "deletion_requested": {"request_id", "categories"},
    "consent_changed": {"purpose", "granted"},
}


class Vocabulary(Protocol):
    """The names the policy knows (all versions). Built by the policy loader."""

    @property
    def categories(self) -> frozenset[str]: ...
    @property
    def purposes(self) -> frozenset[str]: ...
    @property
    def channels(self) -> frozenset[str]: ...
    @property
    def prohibited_collections(self) -> frozenset[tuple[str, str]]: ...


@dataclass(slots=True)
class InputEvent:
    """A validated input event; ``data`` holds plaintext and never leaves the publisher."""

    kind: str
    event_id: str
    occurred_at: datetime
    source: str
    subject_id: str
    actor_id: str
    actor_role: str
    body: dict[str, Any]
    data: dict[str, str] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)
    """Categories whose value the policy forbids collecting on this channel: never encrypted,
    never sent; the worker records the refusal (``prohibited_collection``)."""


def _text(
    obj: Mapping[str, Any], name: str, *, required: bool = True, limit: int = MAX_ID_CHARS
) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValidationError(name, "is required")
        return ""
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ValidationError(name, "must not be empty")
    if len(value) > limit:
        raise ValidationError(name, f"is {len(value)} characters, the limit is {limit}")
    return value


def _shown(value: str) -> str:
    """A name from the input, quoted, only when it looks like a name: anything else may be
    personal data put in the wrong field, and is never repeated."""
    return repr(value) if _NAME.match(value) else "(a value that is not a name)"


def shown_name(value: str) -> str:
    """A name from the input as an error message may show it (see :func:`_shown`)."""
    return _shown(value)


def _field_name(key: str) -> str:
    """A key from the input as it may appear in a field path: as written when it looks like a
    name, else a placeholder (a key may be personal data, e.g. ``{"Jane Doe": ...}``)."""
    return key if _NAME.match(key) else "(an unknown field)"


def _name(obj: Mapping[str, Any], name: str, known: frozenset[str], what: str) -> str:
    value = _text(obj, name)
    if value not in known:
        raise ValidationError(name, f"unknown {what} {_shown(value)} (not in the policy)")
    return value


def _names(
    obj: Mapping[str, Any], name: str, known: frozenset[str], what: str, *, required: bool = True
) -> list[str]:
    value = obj.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value:
        raise ValidationError(name, f"must be a non-empty list of {what} names")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValidationError(f"{name}[{i}]", f"must be a string, got {type(item).__name__}")
        if item not in known:
            raise ValidationError(
                f"{name}[{i}]", f"unknown {what} {_shown(item)} (not in the policy)"
            )
    if len(set(value)) != len(value):
        raise ValidationError(name, f"lists a {what} twice")
    return list(value)


def _timestamp(obj: Mapping[str, Any], now: datetime) -> datetime:
    value = obj.get("occurred_at")
    if value is None:
        return now
    if not isinstance(value, str):
        raise ValidationError(
            "occurred_at", f"must be an ISO-8601 string, got {type(value).__name__}"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("occurred_at", "is not an ISO-8601 date-time") from None
    if parsed.tzinfo is None:
        raise ValidationError("occurred_at", "must include a time zone (e.g. +00:00 or Z)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError("occurred_at", "is out of range") from None


def validate(obj: Any, vocabulary: Vocabulary, *, now: datetime | None = None) -> InputEvent:
    """Validate one decoded JSON object against the contract and the policy's vocabulary."""
    if not isinstance(obj, dict):
        raise ValidationError("(line)", f"must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in _PER_KIND:
        shown = kind if isinstance(kind, str) and _NAME.match(kind) else type(kind).__name__
        raise ValidationError("kind", f"unknown kind {shown!r}; expected one of {', '.join(KINDS)}")
    unknown = set(obj) - _COMMON - _PER_KIND[kind]
    if unknown:
        raise ValidationError(_field_name(sorted(unknown)[0]), f"is not a field of a {kind} event")
    event_id = _text(obj, "event_id", required=False) or str(uuid.uuid4())
    occurred_at = _timestamp(obj, now or datetime.now(UTC))
    source = _text(obj, "source")
    subject_id = _text(obj, "subject_id")
    actor = obj.get("actor")
    if not isinstance(actor, dict):
        raise ValidationError("actor", "must be an object with id and role")
    try:
        actor_id = _text(actor, "id")
        actor_role = _text(actor, "role")
    except ValidationError as exc:
        raise ValidationError(f"actor.{exc.field}", exc.message) from None
    event = InputEvent(kind, event_id, occurred_at, source, subject_id, actor_id, actor_role, {})
    if kind == "collected":
        channel = _name(obj, "channel", vocabulary.channels, "channel")
        purposes = _names(obj, "purposes", vocabulary.purposes, "purpose")
        data = obj.get("data")
        if not isinstance(data, dict) or not data:
            raise ValidationError("data", "must be a non-empty object of category: value")
        for category, value in data.items():
            if category not in vocabulary.categories:
                raise ValidationError(
                    f"data.{_field_name(category)}", "unknown category (not in the policy)"
                )
            if not isinstance(value, str):
                raise ValidationError(
                    f"data.{category}", f"must be a string, got {type(value).__name__}"
                )
            if len(value) > MAX_VALUE_CHARS:
                raise ValidationError(
                    f"data.{category}",
                    f"is {len(value)} characters, the limit is {MAX_VALUE_CHARS}",
                )
            if (channel, category) in vocabulary.prohibited_collections:
                event.withheld.append(category)
            else:
                event.data[category] = value
        event.body = {"channel": channel, "purposes": purposes}
    elif kind in ("used", "shared"):
        event.body = {
            "categories": _names(obj, "categories", vocabulary.categories, "category"),
            "purpose": _name(obj, "purpose", vocabulary.purposes, "purpose"),
        }
        if kind == "shared":
            recipient = _text(obj, "recipient")
            if not _NAME.match(recipient):
                raise ValidationError("recipient", "must be a lower_snake_case party name")
            event.body["recipient"] = recipient
    elif kind == "deletion_requested":
        categories = _names(obj, "categories", vocabulary.categories, "category", required=False)
        event.body = {"request_id": _text(obj, "request_id"), "categories": categories or None}
    else:
        granted = obj.get("granted")
        if not isinstance(granted, bool):
            raise ValidationError("granted", "must be true or false")
        event.body = {
            "purpose": _name(obj, "purpose", vocabulary.purposes, "purpose"),
            "granted": granted,
        }
    return event


def parse_line(
    line: str | bytes, vocabulary: Vocabulary, *, now: datetime | None = None
) -> InputEvent:
    """Parse and validate one JSON line."""
    if len(line) > MAX_LINE_BYTES:
        raise ValidationError("(line)", f"is {len(line)} bytes, the limit is {MAX_LINE_BYTES}")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(
            "(line)", f"malformed JSON: {exc.msg} at column {exc.colno}"
        ) from None
    return validate(obj, vocabulary, now=now)
