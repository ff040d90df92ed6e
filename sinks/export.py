"""Ledger records written out for analysts and auditors: JSON lines or CSV, one record a line.

Each JSON line holds a record's canonical fields plus ``hash`` (see
:meth:`~sinks.entry.AuditEntry.as_export`): without its ``hash`` key and encoded canonically it
hashes to ``hash``, so anyone can recheck an export. CSV keeps the same columns in
:data:`EXPORT_FIELDS` order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import IO, Any

import orjson

EXPORT_FIELDS = (
    "seq",
    "event_id",
    "kind",
    "subject_ref",
    "decision",
    "reason_code",
    "policy_version",
    "occurred_at",
    "decided_at",
    "recorded_at",
    "source",
    "actor_role",
    "purpose",
    "purposes",
    "consent_granted",
    "recipient",
    "categories",
    "rule",
    "erasure",
    "source_partition",
    "source_offset",
    "prev_hash",
    "hash",
)
"""Columns of the CSV export (and keys of each JSON line), in this order."""

Writer = Callable[[dict[str, Any]], None]
FORMATS = ("jsonl", "csv")


def writer(output_format: str, out: IO[bytes]) -> Writer:
    """A function that writes one exported record to ``out`` in ``output_format``."""
    return _jsonl_writer(out) if output_format == "jsonl" else _csv_writer(out)


def _jsonl_writer(out: IO[bytes]) -> Writer:
    def write(record: dict[str, Any]) -> None:
        out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    return write


def csv_cell(value: Any) -> Any:
    """A record's field as a CSV cell: lists as ``a;b``, a mapping as compact JSON, null as
    an empty cell."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value


def _csv_writer(out: IO[bytes]) -> Writer:
    """Lists as ``a;b``, the erasure record as compact JSON, null as an empty cell."""
    line = io.StringIO()
    rows = csv.writer(line)

    cell = csv_cell

    def emit(cells: list[Any]) -> None:
        rows.writerow(cells)
        out.write(line.getvalue().encode())
        line.seek(0)
        line.truncate()

    emit(list(EXPORT_FIELDS))
    return lambda record: emit([cell(record[name]) for name in EXPORT_FIELDS])
