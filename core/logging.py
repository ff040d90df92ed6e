"""structlog set-up: JSON lines when not on a terminal, readable console output on one.

Log calls name events by id and subject by ``subject_ref`` only. A last processor drops any key
that is known to carry personal data or key material, so a mistake elsewhere cannot leak it.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import threading
import traceback
from collections.abc import MutableMapping
from types import TracebackType
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


def _exception_summary(exc: BaseException) -> dict[str, Any]:
    """An exception as log fields: its type and the first line of its message, and where it
    was raised (file, line, function), but no source lines or locals, which may quote data."""
    first_line = (str(exc).splitlines() or [""])[0][:300]
    frames = [
        f"{frame.filename}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
    ]
    return {"exception": f"{type(exc).__name__}: {first_line}", "frames": frames[-8:]}


def _exception_fields(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``exc_info`` (ours, or a library's ``log.exception``) as :func:`_exception_summary`."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        event_dict.update(_exception_summary(exc_info))
    elif isinstance(exc_info, tuple) and isinstance(exc_info[1], BaseException):
        event_dict.update(_exception_summary(exc_info[1]))
    return event_dict


_SETTINGS: dict[str, Any] = {"level": "INFO", "json": True}


def _renderer(as_json: bool) -> Any:
    return structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()


def _shared_processors() -> list[Any]:
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _exception_fields,
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


def _log_uncaught(kind: str, exc: BaseException | None, thread: str | None = None) -> None:
    """An uncaught exception as one JSON line (see :func:`_exception_summary`)."""
    if exc is None:
        return
    summary = _exception_summary(exc)
    structlog.get_logger("lifecycle.uncaught").critical(
        f"{kind}.uncaught", thread=thread, error=summary["exception"], frames=summary["frames"]
    )


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    thread = args.thread.name if args.thread is not None else None
    _log_uncaught("thread", args.exc_value, thread)


def _process_excepthook(
    _type: type[BaseException], exc: BaseException, _tb: TracebackType | None
) -> None:
    _log_uncaught("process", exc)


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure structlog and the standard library's root logger once per process. Off a
    terminal, uncaught exceptions (of any thread) are logged as JSON lines too, so that every
    line a process writes parses."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    _SETTINGS.update(level=level, json=as_json)
    logging.config.dictConfig(stdlib_logging_config())
    if as_json:
        threading.excepthook = _thread_excepthook
        sys.excepthook = _process_excepthook
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *_shared_processors(),
            _renderer(as_json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def logging_settings() -> dict[str, Any]:
    """The level and format :func:`configure_logging` last set in this process, as its keyword
    arguments: a process it starts logs the same way."""
    return dict(_SETTINGS)


LIBRDKAFKA_LOGGER = "librdkafka"


def librdkafka_logger() -> logging.Logger:
    """The logger every confluent-kafka client is given (its ``logger`` setting): librdkafka's
    own messages (``FAIL``, ``REQTMOUT``, ...) then reach the root handler and come out as
    JSON lines like ours, instead of raw ``%3|...`` lines on stderr. They are delivered when
    the client is polled."""
    return logging.getLogger(LIBRDKAFKA_LOGGER)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
