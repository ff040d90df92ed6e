"""structlog set-up: JSON lines when not on a terminal, readable console output on one.

Log calls name events by id and subject by ``subject_ref`` only. A last processor drops any key
that is known to carry personal data or key material, so a mistake elsewhere cannot leak it.
"""

from __future__ import annotations

import logging
import logging.config
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


_SETTINGS: dict[str, Any] = {"level": "INFO", "json": True}


def _renderer(as_json: bool) -> Any:
    return structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()


def _shared_processors() -> list[Any]:
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_personal_data,
    ]


def stdlib_logging_config() -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that renders the standard library's records (Faust's,
    aiokafka's, SQLAlchemy's) like ours: one JSON object a line off a terminal."""
    level, as_json = _SETTINGS["level"], _SETTINGS["json"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _renderer(as_json),
                ],
                "foreign_pre_chain": [structlog.stdlib.add_logger_name, *_shared_processors()],
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "structlog",
                "level": level,
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure structlog and the standard library's root logger once per process."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    _SETTINGS.update(level=level, json=as_json)
    logging.config.dictConfig(stdlib_logging_config())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *_shared_processors(),
            structlog.processors.format_exc_info,
            _renderer(as_json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
