"""Errors of the schema files."""

from __future__ import annotations

from core.errors import LifecycleError


class SchemaError(LifecycleError):
    """A schema file is missing or invalid."""
