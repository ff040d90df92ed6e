"""Errors of the sinks: the audit ledger and its signing key."""

from __future__ import annotations

from core.errors import LifecycleError


class SinkError(LifecycleError):
    """Root of the sinks' errors."""


class LedgerError(SinkError):
    """The audit ledger could not do what was asked (names what and why)."""


class LedgerUnavailableError(LedgerError):
    """The ledger's database is down or unreachable: nothing was written, retry later.

    The caller must not commit the offsets of the decisions it tried to append.
    """


class InvalidDecisionError(LedgerError):
    """A decision handed to the ledger is malformed; nothing of its batch was written.

    ``index`` is its position in the batch, so the caller can dead-letter it and append the rest.
    """

    def __init__(self, index: int, event_id: object, field: str, message: str) -> None:
        super().__init__(f"decision #{index} (event_id {event_id!r}): {field}: {message}")
        self.index = index
        self.event_id = event_id
        self.field = field
        self.message = message


class SigningKeyError(SinkError):
    """The checkpoint signing key (or its public half) is missing, unsafe or unreadable."""
