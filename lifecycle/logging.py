"""structlog set-up: JSON lines when not on a terminal, readable console output on one.

Log calls name events by id and subject by ``subject_ref`` only. A last processor drops any key
that is known to carry personal data or key material, so a mistake elsewhere cannot leak it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys that must never reach a log line, whatever a caller passes.
FORBIDDEN_LOG_KEYS = frozenset(
    {"subject_id", "data", "value", "plaintext", "key", "data_key", "master_key", "password"}
)


def _drop_personal_data(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name in FORBIDDEN_LOG_KEYS.intersection(event_dict):
        event_dict[name] = "[redacted]"
    return event_dict


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure structlog and the standard library's root logger once per process."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_personal_data,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
