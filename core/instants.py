"""Instants written as ISO-8601 text: one parser, and the command line's option type for it.

A date alone is its midnight; a date-time without a zone is UTC, unless the caller requires a
zone (the input format does: an event's time must not depend on where it was written). The
zone given is kept, so an instant prints as it was written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

EXAMPLES = "2033-01-01, 2033-01-01T09:30:00 in UTC, or 2033-01-01T09:30:00+04:00"


class NotAnInstantError(ValueError):
    """The text is not an ISO-8601 date or date-time."""


class NoZoneError(ValueError):
    """A date-time without a zone where a zone is required."""


def parse_instant(text: str, *, zone_required: bool = False) -> datetime:
    """The aware instant ``text`` names (see the module docstring)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise NotAnInstantError(
            f"{text!r} is not an ISO date or date-time (ISO-8601, e.g. {EXAMPLES})"
        ) from None
    if parsed.tzinfo is not None:
        return parsed
    if zone_required:
        raise NoZoneError(f"{text!r} has no time zone (e.g. +00:00 or Z)")
    return parsed.replace(tzinfo=UTC)


def aware(at: datetime) -> datetime:
    """``at`` with its zone, or in UTC when it has none."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def iso(at: datetime) -> str:
    """``at`` as ISO-8601 text with its zone (UTC when it has none: the stores keep UTC, and
    SQLite hands it back without one)."""
    return aware(at).isoformat()


class InstantType(click.ParamType):
    """A command-line option or argument holding an instant (:func:`parse_instant`)."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return aware(value)
        try:
            return parse_instant(str(value).strip())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


INSTANT = InstantType()
