"""Every released schema version keeps decoding: old producers never break new workers."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from schemas import HISTORY_DIR, SCHEMA_DIR, TOPIC_RECORDS
from schemas.files import load_topic_schema, schema_json
from schemas.snapshot import snapshots
from sinks.replay import AUDIT_RECORD_FINGERPRINT
from streams.codec import SINGLE_OBJECT_MAGIC, SingleObjectCodec, fingerprint
from streams.exceptions import DecodeError

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
    if kind == "map":
        return {f"{name}-key": sample(schema["values"], name, named)}
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


def written_with(path: Path) -> tuple[str, dict[str, Any], bytes]:
    """(record name, a record exercising every field, that record as a single-object value)
    written with the released schema snapshot at ``path``."""
    old = fastavro.parse_schema(json.loads(path.read_text()), _write_hint=False)
    record = sample(json.loads(path.read_text()))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old, record)
    return old["name"], record, SINGLE_OBJECT_MAGIC + fingerprint(old) + body.getvalue()


@pytest.mark.parametrize("path", sorted(HISTORY_DIR.glob("*.avsc")), ids=lambda p: p.name)
def test_records_written_with_every_released_version_decode_into_the_current_one(
    path: Path,
) -> None:
    name, record, data = written_with(path)

    decoded = SingleObjectCodec().decode(name, data)

    current_fields = {f["name"] for f in load_topic_schema(name)["fields"]}
    assert set(decoded) == current_fields
    for field_name, value in record.items():
        if field_name in current_fields:
            assert_carries(decoded[field_name], value)


def assert_carries(decoded: Any, written: Any) -> None:
    """Every value written comes back; nested records may have gained (defaulted) fields."""
    if isinstance(written, dict):
        assert isinstance(decoded, dict)
        for key, value in written.items():
            assert key in decoded, key
            assert_carries(decoded[key], value)
    elif isinstance(written, list):
        assert isinstance(decoded, list) and len(decoded) == len(written)
        for got, value in zip(decoded, written, strict=True):
            assert_carries(got, value)
    else:
        assert decoded == written


def test_history_holds_an_older_version_that_differs_from_the_current_one() -> None:
    """Decision v1 (as first released) lacked ``purposes`` and ``consent_granted``: without a
    version that differs, the test above would prove nothing about schema resolution."""
    differing = [name for name in TOPIC_RECORDS if len({text for _, text in snapshots(name)}) > 1]
    assert "lifecycle.Decision" in differing and "lifecycle.AuditRecord" in differing


def test_a_decision_written_before_purposes_existed_decodes_with_the_new_defaults() -> None:
    v1 = json.loads((HISTORY_DIR / "lifecycle.Decision.v1.avsc").read_text())
    assert {"purposes", "consent_granted"}.isdisjoint(f["name"] for f in v1["fields"])
    _, record, data = written_with(HISTORY_DIR / "lifecycle.Decision.v1.avsc")
    codec = SingleObjectCodec()
    assert data[2:10] != codec.writer_fingerprint("lifecycle.Decision")  # an older writer

    decoded = codec.decode("lifecycle.Decision", data)

    assert decoded["purposes"] == [] and decoded["consent_granted"] is None
    assert decoded["event_id"] == record["event_id"] and decoded["purpose"] == record["purpose"]


def test_the_audit_records_pinned_fingerprint_is_still_the_current_schema() -> None:
    assert SingleObjectCodec().writer_fingerprint("lifecycle.AuditRecord") == (
        AUDIT_RECORD_FINGERPRINT
    )


def test_a_new_required_field_without_default_is_detected_as_incompatible(
    tmp_path: Path,
) -> None:
    """The check above fails for a breaking change: a current Decision gaining a field with
    no default cannot read what released versions wrote."""
    for schema in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(schema, tmp_path / schema.name)
    decision = json.loads((SCHEMA_DIR / "lifecycle.Decision.avsc").read_text())
    decision["fields"].append({"name": "tariff_zone", "type": "string"})  # no default
    (tmp_path / "lifecycle.Decision.avsc").write_text(json.dumps(decision))
    breaking = SingleObjectCodec(schema_dir=tmp_path, history_dir=HISTORY_DIR)

    for version in ("v1", "v2"):
        _, _, data = written_with(HISTORY_DIR / f"lifecycle.Decision.{version}.avsc")
        with pytest.raises(DecodeError, match="tariff_zone"):
            breaking.decode("lifecycle.Decision", data)


def test_requests_and_revocations_written_before_key_versions_existed_decode_as_before() -> None:
    """Records from producers that name no key versions: the worker then destroys every live
    version of the categories (as it always did) and ``keys reshred`` replays by time."""
    codec = SingleObjectCodec()
    _, record, _ = written_with(HISTORY_DIR / "lifecycle.CustomerEvent.v1.avsc")
    record["body"] = {"request_id": "REQ-1", "categories": None}
    old = json.loads((HISTORY_DIR / "lifecycle.CustomerEvent.v1.avsc").read_text())
    parsed = fastavro.parse_schema(old, _write_hint=False)
    body = io.BytesIO()
    record["kind"] = "deletion_requested"
    fastavro.schemaless_writer(
        body, parsed, {**record, "body": ("lifecycle.DeletionRequested", record["body"])}
    )
    data = SINGLE_OBJECT_MAGIC + fingerprint(parsed) + body.getvalue()

    decoded = codec.decode("lifecycle.CustomerEvent", data)

    assert decoded["body"] == {"request_id": "REQ-1", "categories": None, "key_versions_ended": {}}
    _, _, revocation = written_with(HISTORY_DIR / "lifecycle.KeyRevocation.v1.avsc")
    old_revocation = codec.decode("lifecycle.KeyRevocation", revocation)
    assert (old_revocation["through"], old_revocation["versions"], old_revocation["rotated"]) == (
        {},
        {},
        False,
    )
