"""The time, wherever it decides something (retention sweeps), as a value a test can set.

A :class:`Clock` is called for the current instant, always timezone-aware. The pipeline runs on
:class:`SystemClock`; tests (and a worker started for a test) use :class:`FixedClock`, set
months ahead, instead of waiting. The ledger and the metrics take the same callable shape
(``sinks.ledger.Clock``, ``lifecycle.observability.WallClock``), so any of these clocks fits
them too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


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
        self._at = _aware(at)

    def __call__(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = _aware(at)

    def advance(self, by: timedelta) -> None:
        self._at += by


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
