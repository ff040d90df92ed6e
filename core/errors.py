"""The root of every error this project raises.

"Refuse this event" is a *decision* (``allow``/``deny`` with a reason code), never an exception.
Exceptions are for things that are wrong with the input or the environment: a malformed line,
a wrong master key, an invalid policy file, a database that is down.
"""

from __future__ import annotations


class LifecycleError(Exception):
    """Root of every error raised by lifecycle."""


class ConfigurationError(LifecycleError):
    """The environment or a configuration file is wrong (names what and where)."""
