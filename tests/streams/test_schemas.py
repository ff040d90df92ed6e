"""Every released schema version keeps decoding: old producers never break new workers."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from schemas import HISTORY_DIR, TOPIC_RECORDS
from schemas.snapshot import snapshots
from streams.codec import (
    SINGLE_OBJECT_MAGIC,
    SingleObjectCodec,
    fingerprint,
    load_topic_schema,
    schema_json,
)

NOW = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)


def sample(schema: Any, name: str = "", named: dict[str, Any] | None = None) -> Any:
    """A record that exercises every field of ``schema`` (first branch of each union that is
    not null, so optional parts are present)."""
    named = {} if named is None else named
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"] or schema
        return sample(branches[0], name, named)
    if isinstance(schema, str) and schema in named:
        return sample(named[schema], name, named)
    if isinstance(schema, str):
        return {
            "string": f"{name}-x",
            "int": 3,
            "long": 7,
            "boolean": True,
            "bytes": b"\x00\x01",
            "null": None,
            "double": 1.5,
            "float": 0.5,
        }[schema]
    kind = schema["type"]
    if kind in ("record", "enum"):
        named[schema["name"]] = schema
    if kind == "record":
        return {f["name"]: sample(f["type"], f["name"], named) for f in schema["fields"]}
    if kind == "array":
        return [sample(schema["items"], name, named)]
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "long" and schema.get("logicalType") == "timestamp-millis":
        return NOW
    return sample(kind, name)


@pytest.mark.parametrize("name", TOPIC_RECORDS)
def test_current_schema_is_recorded_in_history(name: str) -> None:
    current = json.dumps(json.loads(schema_json(load_topic_schema(name))), sort_keys=True)
    history = snapshots(name)
    assert history, f"no snapshot of {name}: run `python -m schemas.snapshot`"
    assert history[-1][1] == current, f"{name} changed: run `python -m schemas.snapshot`"


@pytest.mark.parametrize("path", sorted(HISTORY_DIR.glob("*.avsc")), ids=lambda p: p.name)
def test_records_written_with_every_released_version_decode_into_the_current_one(path: Any) -> None:
    old = fastavro.parse_schema(json.loads(path.read_text()), _write_hint=False)
    name = old["name"]
    record = sample(json.loads(path.read_text()))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old, record)
    data = SINGLE_OBJECT_MAGIC + fingerprint(old) + body.getvalue()

    decoded = SingleObjectCodec().decode(name, data)

    current_fields = {f["name"] for f in load_topic_schema(name)["fields"]}
    assert set(decoded) == current_fields
    for field_name, value in record.items():
        if field_name in current_fields:
            assert decoded[field_name] == value
