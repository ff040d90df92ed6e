"""Reading the ``*.avsc`` files: a topic record's self-contained schema and its JSON text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import fastavro.schema

from schemas import SCHEMA_DIR
from schemas.exceptions import SchemaError


def load_topic_schema(record_name: str, schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The self-contained (all named types inlined) parsed schema of ``record_name``."""
    path = schema_dir / f"{record_name}.avsc"
    try:
        return cast(dict[str, Any], fastavro.schema.load_schema(str(path), _write_hint=False))
    except FileNotFoundError as exc:
        raise SchemaError(f"no schema file {path}") from exc
    except Exception as exc:
        raise SchemaError(f"invalid schema {path}: {exc}") from exc


def schema_json(parsed: Mapping[str, Any]) -> str:
    """The self-contained JSON text of a parsed schema, logical types, docs and defaults kept
    (for a registry, or a history snapshot)."""
    return json.dumps(_public(parsed), sort_keys=True)


def _public(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _public(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_public(v) for v in node]
    return node
