"""Avro codecs for topic values.

Two wire formats, one interface (:class:`Codec`):

* :class:`SingleObjectCodec` (default, no registry): Avro single-object encoding, i.e.
  ``C3 01`` + the writer schema's 8-byte CRC-64-AVRO fingerprint (little-endian) + the Avro
  body. Writer schemas are resolved by fingerprint from ``schemas/`` and ``schemas/history/``,
  so records written with an older version decode into the current one.
* :class:`ConfluentCodec` (``SCHEMA_REGISTRY_URL`` set): Confluent wire format (magic byte 0,
  4-byte schema id, body) through confluent-kafka's Schema Registry client.

Schemas are parsed once, when the codec is built; encoding and decoding never parse.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import fastavro
import fastavro.schema

from schemas import HISTORY_DIR, SCHEMA_DIR, TOPIC_RECORDS
from schemas.exceptions import SchemaError
from schemas.files import load_topic_schema, schema_json
from streams.exceptions import DecodeError, EncodeError, RegistryUnavailableError

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_HEADER_LEN = 10

Record = dict[str, Any]


class Codec(Protocol):
    """Encodes and decodes the value of a topic as one named Avro record type."""

    def encode(self, record_name: str, record: Mapping[str, Any], topic: str = "") -> bytes: ...

    def decode(self, record_name: str, data: bytes, topic: str = "") -> Record: ...


def fingerprint(parsed: Mapping[str, Any]) -> bytes:
    """CRC-64-AVRO fingerprint of the schema's parsing canonical form, as it goes on the wire."""
    canonical = fastavro.schema.to_parsing_canonical_form(cast(dict[str, Any], parsed))
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


class SingleObjectCodec:
    """Avro single-object encoding with writer schemas resolved from ``schemas/``."""

    __slots__ = ("_current", "_writers")

    def __init__(self, schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR) -> None:
        # record name -> (schema parsed for fastavro, fingerprint). Parsed *with* fastavro's
        # "already parsed" hint: without it fastavro parses the schema again on every call,
        # which would cost more than the encoding itself.
        self._current: dict[str, tuple[Any, bytes]] = {}
        # fingerprint -> (record name, writer schema, needs resolution into current)
        self._writers: dict[bytes, tuple[str, Any, bool]] = {}
        for name in TOPIC_RECORDS:
            plain = load_topic_schema(name, schema_dir)
            fp = fingerprint(plain)
            parsed = fastavro.parse_schema(plain)
            self._current[name] = (parsed, fp)
            self._writers[fp] = (name, parsed, False)
        for path in sorted(history_dir.glob("*.avsc")) if history_dir.is_dir() else []:
            try:
                old = cast(
                    dict[str, Any],
                    fastavro.parse_schema(json.loads(path.read_text()), _write_hint=False),
                )
            except Exception as exc:
                raise SchemaError(f"invalid schema snapshot {path}: {exc}") from exc
            name = old["name"]  # fastavro stores the full name
            fp = fingerprint(old)
            if fp not in self._writers and name in self._current:
                self._writers[fp] = (name, fastavro.parse_schema(old), True)

    def writer_fingerprint(self, record_name: str) -> bytes:
        """The fingerprint :meth:`encode` writes for ``record_name`` (its current schema)."""
        try:
            return self._current[record_name][1]
        except KeyError:
            raise EncodeError(f"no topic schema named {record_name}") from None

    def encode(self, record_name: str, record: Mapping[str, Any], topic: str = "") -> bytes:
        try:
            parsed, fp = self._current[record_name]
        except KeyError:
            raise EncodeError(f"no topic schema named {record_name}") from None
        out = io.BytesIO()
        out.write(SINGLE_OBJECT_MAGIC)
        out.write(fp)
        try:
            fastavro.schemaless_writer(out, parsed, record)
        except Exception as exc:
            raise EncodeError(f"{record_name}: {exc}") from exc
        return out.getvalue()

    def decode(self, record_name: str, data: bytes, topic: str = "") -> Record:
        if len(data) < _HEADER_LEN or data[:2] != SINGLE_OBJECT_MAGIC:
            raise DecodeError("not an Avro single-object record (missing C3 01 header)")
        fp = data[2:_HEADER_LEN]
        try:
            name, writer, resolve = self._writers[fp]
        except KeyError:
            raise DecodeError(f"unknown schema fingerprint {fp.hex()}") from None
        if name != record_name:
            raise DecodeError(f"record is a {name}, expected a {record_name}")
        reader = self._current[name][0] if resolve else None
        body = io.BytesIO(data)
        body.seek(_HEADER_LEN)
        try:
            record: Record = fastavro.schemaless_reader(body, writer, reader)  # type: ignore[assignment]
        except Exception as exc:
            raise DecodeError(f"corrupt {name} body: {type(exc).__name__}: {exc}") from exc
        if body.tell() != len(data):
            raise DecodeError(f"{len(data) - body.tell()} trailing bytes after the {name} body")
        return record


class ConfluentCodec:
    """Confluent wire format through confluent-kafka's Schema Registry client.

    ``url`` may be ``mock://...`` for confluent-kafka's in-process registry (tests).
    Subjects follow the default TopicNameStrategy (``<topic>-value``).
    """

    def __init__(
        self, url: str, schema_dir: Path = SCHEMA_DIR, *, client: Any = None, **client_conf: str
    ) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

        self._client = client or SchemaRegistryClient.new_client({"url": url, **client_conf})
        self._serializers: dict[str, Any] = {}
        self._deserializers: dict[str, Any] = {}
        for name in TOPIC_RECORDS:
            text = schema_json(load_topic_schema(name, schema_dir))
            self._serializers[name] = AvroSerializer(
                self._client, text, conf={"auto.register.schemas": True}
            )
            self._deserializers[name] = AvroDeserializer(self._client, text)

    def encode(self, record_name: str, record: Mapping[str, Any], topic: str = "") -> bytes:
        from confluent_kafka.serialization import MessageField, SerializationContext

        try:
            serializer = self._serializers[record_name]
        except KeyError:
            raise EncodeError(f"no topic schema named {record_name}") from None
        try:
            data: bytes = serializer(dict(record), SerializationContext(topic, MessageField.VALUE))
        except Exception as exc:
            fault = EncodeError(f"{record_name}: {exc}")
            raise _failure(exc, "encoding", record_name, fault) from exc
        return data

    def decode(self, record_name: str, data: bytes, topic: str = "") -> Record:
        from confluent_kafka.serialization import MessageField, SerializationContext

        if not data or data[0] != 0:
            raise DecodeError("not a Confluent wire-format record (magic byte is not 0)")
        try:
            deserializer = self._deserializers[record_name]
        except KeyError:
            raise DecodeError(f"no topic schema named {record_name}") from None
        try:
            record: Record = deserializer(data, SerializationContext(topic, MessageField.VALUE))
        except Exception as exc:
            # unless the registry could not be asked, the record is at fault: an unknown schema
            # id (404), a schema that is not this record's, or a body that does not decode
            fault = DecodeError(f"{record_name}: {_brief(exc)}")
            raise _failure(exc, "decoding", record_name, fault) from exc
        return record


def _failure(exc: BaseException, doing: str, record_name: str, fault: Exception) -> Exception:
    """What to raise for ``exc``: :class:`RegistryUnavailableError` when the registry could not
    be asked (to be retried), else ``fault`` (the record's)."""
    if _registry_unavailable(exc):
        return RegistryUnavailableError(
            f"Schema Registry unavailable {doing} {record_name}: {_brief(exc)}"
        )
    return fault


def _registry_unavailable(exc: BaseException) -> bool:
    """Whether the registry client failed to get an answer (transport error, timeout, a
    failing or refusing server), as opposed to answering that the schema id does not exist."""
    from confluent_kafka.schema_registry.error import OAuthTokenError, SchemaRegistryError

    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code != 404
    if isinstance(exc, OAuthTokenError):
        return True
    # httpx(2)'s TransportError (connection refused, DNS, timeouts, TLS) and its kin derive
    # from neither; match them by module so either HTTP library the client picks is covered
    module = type(exc).__module__.split(".")[0]
    return module in ("httpx", "httpx2", "httpcore", "authlib") or isinstance(exc, OSError)


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def make_codec(schema_registry_url: str | None) -> Codec:
    """The codec the configuration asks for: Confluent when a registry URL is set."""
    if schema_registry_url:
        return ConfluentCodec(schema_registry_url)
    return SingleObjectCodec()
