"""The one clock of the project: the time wherever it decides something, as a value a test
can set.

A :class:`Clock` is called for the current instant, always timezone-aware. The pipeline runs on
:class:`SystemClock`; tests (and a worker started for a test) use :class:`FixedClock`, set
months ahead, instead of waiting. Retention sweeps, the ledger's checkpoint schedule and the
metrics' lag all take a :class:`Clock`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from core.instants import aware


class Clock(Protocol):
    def __call__(self) -> datetime:
        """The current instant (timezone-aware)."""
        ...


class SystemClock:
    """The host's clock, in UTC."""

    __slots__ = ()

    def __call__(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that says ``at`` until it is :meth:`set` or :meth:`advance`\\ d (naive: UTC)."""

    __slots__ = ("_at",)

    def __init__(self, at: datetime) -> None:
        self._at = aware(at)

    def __call__(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = aware(at)

    def advance(self, by: timedelta) -> None:
        self._at += by
