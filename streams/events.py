"""The input format (JSON lines, see docs/) and its validation.

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

from core.instants import NoZoneError, parse_instant
from schemas.kinds import KIND_NAMES, KINDS, BodyField
from streams.exceptions import ValidationError

MAX_LINE_BYTES = 1 << 20
MAX_VALUE_CHARS = 16_384
MAX_ID_CHARS = 128
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_COMMON = frozenset({"kind", "event_id", "occurred_at", "source", "subject_id", "actor"})


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
        parsed = parse_instant(value, zone_required=True)
    except NoZoneError:
        raise ValidationError(
            "occurred_at", "must include a time zone (e.g. +00:00 or Z)"
        ) from None
    except ValueError:
        raise ValidationError("occurred_at", "is not an ISO-8601 date-time") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError("occurred_at", "is out of range") from None


def validate(obj: Any, vocabulary: Vocabulary, *, now: datetime | None = None) -> InputEvent:
    """Validate one decoded JSON object against the contract and the policy's vocabulary."""
    if not isinstance(obj, dict):
        raise ValidationError("(line)", f"must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        shown = kind if isinstance(kind, str) and _NAME.match(kind) else type(kind).__name__
        raise ValidationError(
            "kind", f"unknown kind {shown!r}; expected one of {', '.join(KIND_NAMES)}"
        )
    unknown = set(obj) - _COMMON - KINDS[kind].field_names
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
    for body_field in KINDS[kind].fields:
        _read_field(obj, body_field, vocabulary, event)
    return event


def _read_field(
    obj: Mapping[str, Any], body_field: BodyField, vocabulary: Vocabulary, event: InputEvent
) -> None:
    """Validate one body field by its form into ``event`` (its body, or its data)."""
    name, form = body_field.name, body_field.form
    body = event.body
    if form == "channel":
        body[name] = _name(obj, name, vocabulary.channels, "channel")
    elif form == "purposes":
        body[name] = _names(obj, name, vocabulary.purposes, "purpose")
    elif form == "purpose":
        body[name] = _name(obj, name, vocabulary.purposes, "purpose")
    elif form == "categories":
        body[name] = _names(obj, name, vocabulary.categories, "category")
    elif form == "categories_or_all":
        body[name] = _names(obj, name, vocabulary.categories, "category", required=False) or None
    elif form == "party":
        party = _text(obj, name)
        if not _NAME.match(party):
            raise ValidationError(name, "must be a lower_snake_case party name")
        body[name] = party
    elif form == "text":
        body[name] = _text(obj, name)
    elif form == "flag":
        flag = obj.get(name)
        if not isinstance(flag, bool):
            raise ValidationError(name, "must be true or false")
        body[name] = flag
    else:  # "data": the values, kept apart from the body (encrypted before they travel)
        _read_values(obj, name, body.get("channel", ""), vocabulary, event)


def _read_values(
    obj: Mapping[str, Any], name: str, channel: str, vocabulary: Vocabulary, event: InputEvent
) -> None:
    data = obj.get(name)
    if not isinstance(data, dict) or not data:
        raise ValidationError(name, "must be a non-empty object of category: value")
    for category, value in data.items():
        if category not in vocabulary.categories:
            raise ValidationError(
                f"{name}.{_field_name(category)}", "unknown category (not in the policy)"
            )
        if not isinstance(value, str):
            raise ValidationError(
                f"{name}.{category}", f"must be a string, got {type(value).__name__}"
            )
        if len(value) > MAX_VALUE_CHARS:
            raise ValidationError(
                f"{name}.{category}", f"is {len(value)} characters, the limit is {MAX_VALUE_CHARS}"
            )
        if (channel, category) in vocabulary.prohibited_collections:
            event.withheld.append(category)
        else:
            event.data[category] = value


def parse_line(
    line: str | bytes, vocabulary: Vocabulary, *, now: datetime | None = None
) -> InputEvent:
    """Parse and validate one JSON line."""
    return validate(read_line(line), vocabulary, now=now)


def read_line(line: str | bytes) -> Any:
    """The JSON value on ``line`` (not validated yet); a :class:`ValidationError` says why the
    line cannot be read (too long, malformed)."""
    if len(line) > MAX_LINE_BYTES:
        raise ValidationError("(line)", f"is {len(line)} bytes, the limit is {MAX_LINE_BYTES}")
    return decode_line(line)


def decode_line(line: str | bytes) -> Any:
    """The JSON value on ``line``; a :class:`ValidationError` says where it is malformed."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(
            "(line)", f"malformed JSON: {exc.msg} at column {exc.colno}"
        ) from None
