"""Errors of the decision processors: the policy files, the per-subject state, malformed events.

A refused event is a *decision* (``deny`` with a reason code), never one of these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.errors import ConfigurationError, LifecycleError


class ProcessorsError(LifecycleError):
    """Root of the decision processors' errors."""


class PolicyError(ProcessorsError, ConfigurationError):
    """A policy file is invalid. Names the file, the path inside it and the reason.

    ``problems`` lists every ``(path, reason)`` found in the file; the message starts with the
    first one, so a log line alone says what to fix.
    """

    def __init__(self, file: Path | str, problems: Sequence[tuple[str, str]]) -> None:
        if not problems:
            raise ValueError("PolicyError needs at least one problem")
        self.file = str(file)
        self.problems = tuple(problems)
        self.path, self.reason = self.problems[0]
        lines = [f"{self.file}: {path}: {reason}" for path, reason in self.problems]
        if len(lines) > 1:
            lines.insert(1, f"({len(lines)} problems in this file)")
        super().__init__("\n".join(lines))


class StateError(ProcessorsError):
    """Stored per-subject state does not have the shape :class:`SubjectState` writes."""


class EventError(ProcessorsError):
    """An event does not have the decoded ``lifecycle.CustomerEvent`` shape (dead-letter it)."""
