"""Writers of the two records every event makes: the publisher's ``lifecycle.CustomerEvent``
and the decision stage's ``lifecycle.Decision``, the bytes
:class:`~streams.codec.SingleObjectCodec` gives, written field by field.

fastavro interprets the schema for every record it writes (a dictionary lookup and a call per
field and per union branch); these writers know the one schema each was written for, so a
record costs a few joins. Each is used only for that schema (:data:`CUSTOMER_EVENT_FINGERPRINT`,
:data:`DECISION_FINGERPRINT`, which a test compares with ``schemas/``: a schema change must
revisit the writer, and until then the codec writes every record), and declines anything it
was not written for: a value of an unexpected type, a naive or out-of-range time, a number
outside its Avro type, an ``auth`` already set, a decision's erasure outcome. A declined
record goes to the codec, which writes it or says what is wrong, so the bytes and the errors
are the codec's in every case (the tests feed both the same records).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from streams.codec import SINGLE_OBJECT_MAGIC, Codec, SingleObjectCodec

CUSTOMER_EVENT_FINGERPRINT = bytes.fromhex("0e686e9ddb63152b")
"""CRC-64-AVRO fingerprint of the ``lifecycle.CustomerEvent`` schema this writer writes."""

DECISION_FINGERPRINT = bytes.fromhex("48e66b3a684c317d")
"""CRC-64-AVRO fingerprint of the ``lifecycle.Decision`` schema this module writes."""

RECORD = "lifecycle.CustomerEvent"
DECISION = "lifecycle.Decision"
_HEADER = SINGLE_OBJECT_MAGIC + CUSTOMER_EVENT_FINGERPRINT
_DECISION_HEADER = SINGLE_OBJECT_MAGIC + DECISION_FINGERPRINT
_VERDICTS = {"allow": b"\x00", "deny": b"\x02"}
_KINDS = ("collected", "used", "shared", "deletion_requested", "consent_changed")
_BODIES = (
    "lifecycle.Collected",
    "lifecycle.Used",
    "lifecycle.Shared",
    "lifecycle.DeletionRequested",
    "lifecycle.ConsentChanged",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_NULL = b"\x00"
_SECOND_BRANCH = b"\x02"
_END = b"\x00"  # an array's or a map's last (empty) block


class _Unusual(Exception):
    """Something this writer leaves to the codec."""


def _varint(value: int) -> bytes:
    """Avro's zig-zag varint of a long."""
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise _Unusual
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_LIMIT = 1 << 13
_SMALL = tuple(_varint(n) for n in range(_SMALL_LIMIT))
"""The varints of 0 .. 8191 (lengths, counts, versions), made once."""


def _long(value: int) -> bytes:
    if type(value) is not int and type(value) is not bool:
        raise _Unusual
    if 0 <= value < _SMALL_LIMIT:
        return _SMALL[value]
    return _varint(value)


def _int(value: int) -> bytes:
    if type(value) is not int and type(value) is not bool:
        raise _Unusual
    if 0 <= value < _SMALL_LIMIT:
        return _SMALL[value]
    if not _INT_MIN <= value <= _INT_MAX:
        raise _Unusual
    return _varint(value)


def _size(size: int) -> bytes:
    return _SMALL[size] if size < _SMALL_LIMIT else _varint(size)


def _string(text: str) -> bytes:
    data = text.encode()  # AttributeError for anything but text
    return _size(len(data)) + data


def _bytes(data: bytes) -> bytes:
    if type(data) is not bytes:
        raise _Unusual
    return _size(len(data)) + data


def _millis(moment: datetime) -> bytes:
    """A ``timestamp-millis`` as the codec writes an aware datetime."""
    if type(moment) is not datetime or moment.tzinfo is None:
        raise _Unusual
    delta = moment - _EPOCH
    return _varint((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)


def _optional(text: str | None) -> bytes:
    """A ``["null", "string"]`` union."""
    return _NULL if text is None else _SECOND_BRANCH + _string(text)


def _strings(items: Any) -> bytes:
    """An array of strings, in one block."""
    if type(items) is not list and type(items) is not tuple:
        raise _Unusual
    if not items:
        return _END
    return b"".join([_size(len(items)), *map(_string, items), _END])


def _encrypted(value: Mapping[str, Any]) -> bytes:
    """A ``lifecycle.EncryptedValue``."""
    category = value["category"].encode()
    nonce, ciphertext = value["nonce"], value["ciphertext"]
    if type(nonce) is not bytes or type(ciphertext) is not bytes:
        raise _Unusual
    return b"".join(
        (
            _size(len(category)),
            category,
            _int(value["key_version"]),
            _size(len(nonce)),
            nonce,
            _size(len(ciphertext)),
            ciphertext,
        )
    )


def _collected(body: Mapping[str, Any]) -> bytes:
    data = body["data"]
    if type(data) is not list:
        raise _Unusual
    values = b"".join([_size(len(data)), *map(_encrypted, data), _END]) if data else _END
    return _string(body["channel"]) + _strings(body["purposes"]) + values


def _used(body: Mapping[str, Any]) -> bytes:
    return _strings(body["categories"]) + _string(body["purpose"])


def _shared(body: Mapping[str, Any]) -> bytes:
    return _strings(body["categories"]) + _string(body["recipient"]) + _string(body["purpose"])


def _deletion_requested(body: Mapping[str, Any]) -> bytes:
    categories = body["categories"]
    ended = body["key_versions_ended"]
    if type(ended) is not dict:
        raise _Unusual
    versions = (
        b"".join(
            [
                _size(len(ended)),
                *(_string(category) + _int(version) for category, version in ended.items()),
                _END,
            ]
        )
        if ended
        else _END
    )
    return (
        _string(body["request_id"])
        + (_NULL if categories is None else _SECOND_BRANCH + _strings(categories))
        + versions
    )


def _consent_changed(body: Mapping[str, Any]) -> bytes:
    granted = body["granted"]
    if type(granted) is not bool:
        raise _Unusual
    return _string(body["purpose"]) + (b"\x01" if granted else b"\x00")


_BODY_WRITERS: dict[str, tuple[bytes, Callable[[Mapping[str, Any]], bytes]]] = {
    name: (_SMALL[index], writer)
    for index, (name, writer) in enumerate(
        zip(
            _BODIES,
            (_collected, _used, _shared, _deletion_requested, _consent_changed),
            strict=True,
        )
    )
}
_KIND_SYMBOLS = {kind: _SMALL[index] for index, kind in enumerate(_KINDS)}


class _RecordWriter:
    """Writes values of the record :attr:`RECORD` as ``codec`` does, for the schema
    :attr:`FINGERPRINT` names (see the module)."""

    RECORD: ClassVar[str]
    FINGERPRINT: ClassVar[bytes]
    __slots__ = ("_codec", "_topic", "declined")

    def __init__(self, codec: Codec, topic: str) -> None:
        self._codec = codec
        self._topic = topic
        self.declined = 0
        """Records left to the codec."""

    @classmethod
    def for_codec(cls, codec: Codec, topic: str) -> Self | None:
        """A writer when ``codec`` writes the record the way this writer does."""
        if not isinstance(codec, SingleObjectCodec):
            return None
        if codec.writer_fingerprint(cls.RECORD) != cls.FINGERPRINT:
            return None
        return cls(codec, topic)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """The value of ``record``, with its header."""
        try:
            return self._write(record)
        except (_Unusual, KeyError, TypeError, ValueError, AttributeError, OverflowError):
            self.declined += 1
            return self._codec.encode(self.RECORD, record, self._topic)

    @staticmethod
    def _write(record: Mapping[str, Any]) -> bytes:
        raise NotImplementedError


class CustomerEventWriter(_RecordWriter):
    """Writes ``lifecycle.CustomerEvent`` values (``body`` given as (branch name, body), the
    notation the codec takes too); the publisher's records are never declined."""

    RECORD = RECORD
    FINGERPRINT = CUSTOMER_EVENT_FINGERPRINT
    __slots__ = ()

    @staticmethod
    def _write(record: Mapping[str, Any]) -> bytes:
        union = record["body"]
        if type(union) is not tuple:
            raise _Unusual
        branch, body = union
        index, write_body = _BODY_WRITERS[branch]
        if record["auth"] is not None:
            raise _Unusual
        actor = record["actor"]
        return b"".join(
            (
                _HEADER,
                _string(record["event_id"]),
                _KIND_SYMBOLS[record["kind"]],
                _millis(record["occurred_at"]),
                _millis(record["published_at"]),
                _string(record["source"]),
                _string(record["subject_ref"]),
                _encrypted(record["subject"]),
                _string(actor["id"]),
                _string(actor["role"]),
                index,
                write_body(body),
                _NULL,  # auth: the source's MAC is sealed in afterwards
            )
        )


class DecisionWriter(_RecordWriter):
    """Writes ``lifecycle.Decision`` values; a decision with an erasure outcome (one an
    erasure request or a sweep got) is left to the codec."""

    RECORD = DECISION
    FINGERPRINT = DECISION_FINGERPRINT
    __slots__ = ()

    @staticmethod
    def _write(record: Mapping[str, Any]) -> bytes:
        if record["erasure"] is not None:
            raise _Unusual
        granted = record["consent_granted"]
        if granted is None:
            consent = _NULL
        elif type(granted) is bool:
            consent = b"\x02\x01" if granted else b"\x02\x00"
        else:
            raise _Unusual
        return b"".join(
            (
                _DECISION_HEADER,
                _string(record["event_id"]),
                _string(record["kind"]),
                _string(record["subject_ref"]),
                _string(record["source"]),
                _strings(record["categories"]),
                _optional(record["purpose"]),
                _strings(record["purposes"]),
                consent,
                _optional(record["recipient"]),
                _optional(record["actor_role"]),
                _VERDICTS[record["decision"]],
                _string(record["reason_code"]),
                _string(record["rule"]),
                _string(record["policy_version"]),
                _millis(record["occurred_at"]),
                _millis(record["decided_at"]),
                _int(record["source_partition"]),
                _long(record["source_offset"]),
                _NULL,  # erasure
            )
        )


__all__ = [
    "CUSTOMER_EVENT_FINGERPRINT",
    "DECISION_FINGERPRINT",
    "CustomerEventWriter",
    "DecisionWriter",
]
