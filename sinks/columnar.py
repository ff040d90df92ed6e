"""Ledger records as Apache Parquet, for analysts' tools (DuckDB, pandas, Spark, ...):
``lifecycle audit export --format parquet --output FILE``.

The columns are those of the JSON lines export, typed:

* ``seq``, ``source_offset``: int64; ``source_partition``: int32;
* ``occurred_at``, ``decided_at``, ``recorded_at``: timestamp (milliseconds, UTC);
* ``categories``, ``purposes``: list<string>; ``consent_granted``: boolean;
* ``erasure``: struct<request_id, status, shredded list<string>,
  retained list<struct<category, basis, until>>> (null for other records);
* the rest: string (``decision``, ``kind``, ``reason_code`` ... repeat: Parquet stores them
  dictionary-encoded).

``prev_hash`` and ``hash`` are kept, so a row can be traced back to the signed ledger (the
JSON lines export, a bundle or a receipt re-hashes it; Parquet itself does not preserve the
canonical text).

pyarrow is an optional dependency: ``pip install 'lifecycle[analysis]'``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from sinks.entry import AuditEntry
from sinks.exceptions import SinkError
from sinks.stored import parse_utc_text

ANALYSIS_EXTRA = "pip install 'lifecycle[analysis]'"
ROW_GROUP = 50_000
"""Rows per Parquet row group (and per batch held in memory while writing)."""


class MissingExtraError(SinkError):
    """An optional dependency is not installed (names the extra that brings it)."""


def _pyarrow() -> tuple[ModuleType, ModuleType]:
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise MissingExtraError(
            f"Parquet export needs pyarrow, which is not installed ({exc}): {ANALYSIS_EXTRA}"
        ) from None
    return pa, pq


def parquet_schema(pa: Any) -> Any:
    """The Arrow schema of the export (see the module docstring)."""
    text, timestamp, strings = pa.string(), pa.timestamp("ms", tz="UTC"), pa.list_(pa.string())
    retained = pa.struct([("category", text), ("basis", text), ("until", text)])
    erasure = pa.struct(
        [
            ("request_id", text),
            ("status", text),
            ("shredded", strings),
            ("retained", pa.list_(retained)),
        ]
    )
    return pa.schema(
        [
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("event_id", text, nullable=False),
            pa.field("kind", text, nullable=False),
            pa.field("subject_ref", text, nullable=False),
            pa.field("decision", text, nullable=False),
            pa.field("reason_code", text, nullable=False),
            pa.field("policy_version", text, nullable=False),
            pa.field("occurred_at", timestamp, nullable=False),
            pa.field("decided_at", timestamp, nullable=False),
            pa.field("recorded_at", timestamp, nullable=False),
            pa.field("source", text, nullable=False),
            pa.field("actor_role", text),
            pa.field("purpose", text),
            pa.field("purposes", strings, nullable=False),
            pa.field("consent_granted", pa.bool_()),
            pa.field("recipient", text),
            pa.field("categories", strings, nullable=False),
            pa.field("rule", text, nullable=False),
            pa.field("erasure", erasure),
            pa.field("source_partition", pa.int32(), nullable=False),
            pa.field("source_offset", pa.int64(), nullable=False),
            pa.field("prev_hash", text, nullable=False),
            pa.field("hash", text, nullable=False),
        ]
    )


_TIMES = ("occurred_at", "decided_at", "recorded_at")


def _row(entry: AuditEntry) -> dict[str, Any]:
    row = entry.as_export()
    for name in _TIMES:
        row[name] = parse_utc_text(row[name])
    return row


def write_parquet(entries: Iterable[AuditEntry], path: Path) -> int:
    """Write ``entries`` to a Parquet file at ``path`` (replaced whole, or left untouched when
    writing fails); the number of rows written."""
    pa, pq = _pyarrow()
    schema = parquet_schema(pa)
    tmp = path.with_name(f".{path.name}.tmp")
    rows = 0
    try:
        with pq.ParquetWriter(str(tmp), schema, compression="zstd") as writer:
            batch: list[dict[str, Any]] = []
            for entry in entries:
                batch.append(_row(entry))
                if len(batch) >= ROW_GROUP:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    rows += len(batch)
                    batch.clear()
            if batch or rows == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                rows += len(batch)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows


__all__ = ["ANALYSIS_EXTRA", "MissingExtraError", "parquet_schema", "write_parquet"]
