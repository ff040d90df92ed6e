"""``lifecycle audit replay``: read ``privacy.audit`` and check the hash chain as it goes.

The topic is at-least-once (a record is published again when the ledger stage redoes a batch
after a crash) and, with several workers, records may arrive slightly out of ``seq`` order:
:class:`~sinks.chain.ChainFollower` deduplicates by seq and reorders within a window, and the
first record that breaks the chain stops the replay, naming its seq.

Each verified record is emitted as one JSON line (:func:`replay_line`): its canonical
encoding, the object its hash is taken over (every field, timestamps as UTC text, keys
sorted), with ``hash`` added at the end. Records are read in batches. Those in the
single-object encoding of the current ``lifecycle.AuditRecord`` schema without an erasure
(nearly all) are read by :class:`AuditRecordReader` straight into that encoding and line;
anything else goes through the codec, :func:`~sinks.stored.audit_record_row` and
:func:`~sinks.canonical.canonical_bytes`, which stay the reference the reader is tested against.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sinks.canonical import CANONICAL_KEYS, canonical_bytes, canonical_hash
from sinks.chain import ChainFollower, ChainProblem, VerifyReport
from sinks.stored import audit_record_row
from streams.codec import SINGLE_OBJECT_MAGIC, Codec, SingleObjectCodec
from streams.exceptions import DecodeError
from streams.reader import TopicReader
from streams.topics import AUDIT

BATCH = 1_000
"""Records taken from the consumer at a time."""


def replay_line(canonical: bytes, stored_hash: str) -> bytes:
    """The JSON line ``audit replay`` prints for a record: its canonical encoding (a JSON
    object) with the stored ``hash`` added as the last key; no newline."""
    return b'%s,"hash":"%s"}' % (canonical[:-1], stored_hash.encode())


def replay(
    client_config: dict[str, str],
    codec: Codec,
    emit: Callable[[bytes], None],
    *,
    from_beginning: bool = True,
    follow: bool = False,
    stop: Callable[[], bool] = lambda: False,
) -> VerifyReport:
    """Emit every verified record (its line, see :func:`replay_line`) in seq order; the report
    when the topic's end is reached (or, with ``follow``, when ``stop()`` says so or the chain
    breaks)."""
    follower = ChainFollower(anchor_on_first=not from_beginning)
    reader = AuditRecordReader.for_codec(codec)
    read = reader.read if reader is not None else _never
    records = TopicReader(
        client_config,
        AUDIT,
        start="first" if from_beginning else "end",
        partitions=[0],
        label="replay",
        batch=BATCH,
    )
    for message in records.messages(follow=follow, stop=stop):
        value = message.value() or b""
        fast = read(value)
        if fast is not None:
            verified = follower.feed_hashed(*fast)
        else:
            try:
                record = codec.decode("lifecycle.AuditRecord", value, AUDIT)
            except DecodeError as exc:
                follower.problem = ChainProblem(
                    follower.head_seq + 1,
                    f"privacy.audit offset {message.offset()} is not an audit record: {exc}",
                )
                break
            verified = _feed(follower, record)
        for item in verified:
            emit(item)
        if follower.problem is not None:
            break
    return follower.finish()


def _never(_value: bytes) -> None:
    return None


def _feed(follower: ChainFollower, record: dict[str, Any]) -> list[Any]:
    """The codec path: ``record`` (a decoded AuditRecord) into ``follower``, as its line."""
    try:
        row = audit_record_row(record)
        canonical = canonical_bytes(row)
    except (ValueError, TypeError, KeyError) as exc:
        seq = record.get("seq")
        at = seq if isinstance(seq, int) else follower.head_seq + 1
        follower.problem = ChainProblem(at, f"record {at} cannot be read: {exc}")
        return []
    stored_hash = row["hash"]
    return follower.feed_hashed(
        replay_line(canonical, stored_hash),
        row["seq"],
        row["prev_hash"],
        stored_hash,
        canonical_hash(canonical),
    )


# --------------------------------------------------------------------------- the fast reader

AUDIT_RECORD_FINGERPRINT = bytes.fromhex("5a030c94f5a53305")
"""CRC-64-AVRO fingerprint of the ``lifecycle.AuditRecord`` schema (with ``lifecycle.Decision``
inlined) that :class:`AuditRecordReader` was written for. A test compares it with
``schemas/``: a schema change must revisit the reader (until then it reads nothing)."""

Read = tuple[bytes, int, str, str, str]
"""(its line, seq, prev_hash, stored hash, hash of its content): what
:meth:`~sinks.chain.ChainFollower.feed_hashed` takes."""


class _Unusual(Exception):
    """Something the reader leaves to the codec (which decodes it, or says what is wrong)."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MEMO_MAX = 4096
_MILLIS_TEXT = tuple(b".%03dZ" % n for n in range(1000))
_JSON_AS_IT_IS = cast(
    Callable[[bytes], "re.Match[bytes] | None"], re.compile(rb"[ !#-\[\]-~]*").fullmatch
)
r"""Text the canonical encoding writes as it is between quotes: printable ASCII but ``"`` and
``\``."""

Middle = tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes]
"""The canonical JSON of the fields from ``source`` to ``policy_version`` (see
:meth:`AuditRecordReader._middle`)."""


def _template() -> bytes:
    """The canonical encoding of a record without an erasure, as a ``%`` template: the keys
    in the canonical order, each value a ``%s`` for its JSON (between quotes for the texts
    read as they are), up to the closing brace."""
    quoted = {
        "decided_at",
        "event_id",
        "kind",
        "occurred_at",
        "prev_hash",
        "recorded_at",
        "subject_ref",
    }
    parts = []
    for key in CANONICAL_KEYS:
        value = b"null" if key == "erasure" else b'"%s"' if key in quoted else b"%s"
        parts.append(b'"%s":%s' % (key.encode(), value))
    return b"{" + b",".join(parts)


_BODY = _template()


class AuditRecordReader:
    r"""Reads a ``privacy.audit`` value written with :data:`AUDIT_RECORD_FINGERPRINT` and no
    erasure into the canonical encoding :func:`~sinks.canonical.canonical_bytes` would give for
    its stored row, hashes it as :func:`~sinks.canonical.row_hash` would, and makes its line.

    Declines (returns None) anything else or anything unusual: another schema, an erasure, a
    text holding anything but printable ASCII other than ``"`` and ``\``, a text of 64 bytes
    or more (other than ``rule``, and the 64-character hashes and pseudonym, which must be
    letters and digits), an array of 64 texts or more, an empty required text, a varint longer
    than 63 bits, a non-canonical union, enum or boolean byte, a negative length, a time out
    of range, trailing or missing bytes. The caller then takes the codec's path, so a declined
    record is checked (or refused) exactly as before.

    The texts it accepts are written as they are between quotes, so the canonical encoding is
    filled into a template from the value's own bytes. The fields from ``source`` to
    ``policy_version`` lie together in the value and repeat from record to record (the same
    decisions under the same rules): their JSON is remembered by their bytes, which end where
    the four numbers the value ends with begin, found backwards from the end (only a varint's
    last byte is below 0x80, and so is the last byte of the text before them). A
    region is remembered only when it reads to exactly its end, so a value whose region is
    not one of those is read in full (and declined when it does not read).
    """

    __slots__ = ("_middles", "_moments", "_seconds", "_texts")

    def __init__(self) -> None:
        self._moments: dict[bytes, bytes] = {}  # varint -> its text
        self._seconds: dict[int, bytes] = {}  # whole second -> its text
        self._middles: dict[bytes, Middle] = {}  # bytes from source to policy_version
        self._texts: dict[bytes, bytes] = {}  # a short text's bytes (length first) -> JSON

    @classmethod
    def for_codec(cls, codec: Codec) -> AuditRecordReader | None:
        """A reader when ``codec`` writes audit records the way this reader reads them."""
        if not isinstance(codec, SingleObjectCodec):
            return None
        if codec.writer_fingerprint("lifecycle.AuditRecord") != AUDIT_RECORD_FINGERPRINT:
            return None
        return cls()

    def read(self, value: bytes) -> Read | None:
        """The record in ``value``, or None: leave it to the codec."""
        try:
            return self._read(value)
        except (_Unusual, IndexError, OverflowError, AttributeError):
            return None  # AttributeError: a varint that does not end (no match)

    def _moment(self, varint: bytes) -> bytes:
        """A timestamp-millis (its varint bytes) as the canonical encoding's UTC text."""
        known = self._moments.get(varint)
        if known is not None:
            return known
        if len(self._moments) >= _MEMO_MAX:
            self._moments.clear()
        if len(varint) == 6:  # 2001..2112, unrolled: most times are seen once
            b0, b1, b2, b3, b4, b5 = varint
            raw = (
                (b0 & 0x7F)
                | (b1 & 0x7F) << 7
                | (b2 & 0x7F) << 14
                | (b3 & 0x7F) << 21
                | (b4 & 0x7F) << 28
                | b5 << 35
            )
            second, millis = divmod((raw >> 1) ^ -(raw & 1), 1000)
        else:
            second, millis = divmod(_long(varint, 0)[0], 1000)
        whole = self._seconds.get(second)
        if whole is None:
            if len(self._seconds) >= _MEMO_MAX:
                self._seconds.clear()
            moment = _EPOCH + timedelta(seconds=second)
            whole = self._seconds[second] = moment.isoformat()[:-6].encode()  # no "+00:00"
        # as utc_text(_EPOCH + timedelta(milliseconds=...)), without formatting each time
        known = self._moments[varint] = whole + _MILLIS_TEXT[millis]
        return known

    def _read(self, data: bytes) -> Read:
        if data[:10] != _HEADER:
            raise _Unusual
        seq, at = _long(data, 10)
        # prev_hash and hash: 64 characters each (a two-byte length), checked with subject_ref
        if data[at : at + 2] != _LENGTH_64 or data[at + 66 : at + 68] != _LENGTH_64:
            raise _Unusual
        prev_hash, stored_hash = data[at + 2 : at + 66], data[at + 68 : at + 132]
        at += 132
        recorded_end = _VARINT_END(data, at).end()  # AttributeError: no end (caught below)
        recorded = self._moment(data[at:recorded_end])
        at = recorded_end
        length = data[at]  # event_id, kind: short texts, written as they are
        if length & 0x81 or not length:
            raise _Unusual
        end = at + 1 + (length >> 1)
        event_id = data[at + 1 : end]
        length = data[end]
        if length & 0x81 or not length:
            raise _Unusual
        at, end = end, end + 1 + (length >> 1)
        kind = data[at + 1 : end]
        if not (_JSON_AS_IT_IS(event_id) and _JSON_AS_IT_IS(kind)):
            raise _Unusual
        if data[end : end + 2] != _LENGTH_64:
            raise _Unusual
        subject_ref, at = data[end + 2 : end + 66], end + 66
        hashes = prev_hash + stored_hash + subject_ref  # letters and digits, as they are
        if len(hashes) != 192 or not hashes.isalnum():
            raise _Unusual
        # From the end: erasure (null), source_offset, source_partition, decided_at and
        # occurred_at, each varint ending at the next byte below 0x80 found backwards
        if data[-1]:
            raise _Unusual  # an erasure: the codec's path
        base = max(at, len(data) - _TAIL_MOST)
        ends = data[base:].translate(_VARINT_ENDS)  # 0 where a byte is below 0x80
        end = len(ends) - 1  # the erasure's byte
        find = ends.rfind
        offset_end = end - 1
        if ends[offset_end]:
            raise _Unusual
        partition_end = find(b"\0", 0, offset_end)
        decided_end = find(b"\0", 0, partition_end)
        occurred_end = find(b"\0", 0, decided_end)
        middle_end = find(b"\0", 0, occurred_end)
        if (
            middle_end < 0
            or offset_end - partition_end > 9
            or partition_end - decided_end > 9
            or decided_end - occurred_end > 9
            or occurred_end - middle_end > 9
        ):
            raise _Unusual  # a varint longer than 63 bits, or no room for the fields before
        occurred_at = base + middle_end + 1
        decided_at = base + occurred_end + 1
        partition_at = base + decided_end + 1
        offset_at = base + partition_end + 1
        middle = data[at:occurred_at]
        known = self._middles.get(middle)
        if known is None:
            known = self._middle(middle)
        (
            actor_role,
            categories,
            consent_granted,
            decision,
            policy_version,
            purpose,
            purposes,
            reason_code,
            recipient,
            rule,
            source,
        ) = known
        body = _BODY % (
            actor_role,
            categories,
            consent_granted,
            self._moment(data[decided_at:partition_at]),
            decision,
            event_id,
            kind,
            self._moment(data[occurred_at:decided_at]),
            policy_version,
            prev_hash,
            purpose,
            purposes,
            reason_code,
            recipient,
            recorded,
            rule,
            b"%d" % seq,
            source,
            b"%d" % _long(data, offset_at)[0],
            b"%d" % _long(data, partition_at)[0],
            subject_ref,
        )
        stored = stored_hash.decode()
        return (
            b'%s,"hash":"%s"}' % (body, stored_hash),  # replay_line
            seq,
            prev_hash.decode(),
            stored,
            canonical_hash(body + b"}"),
        )

    def _middle(self, data: bytes) -> Middle:
        """The canonical JSON of ``source`` .. ``policy_version``, whose encoding is all of
        ``data`` (remembered by it)."""
        text = self._text
        source, at = text(data, 0)
        categories, at = _texts(data, at, text)
        purpose, at = _optional(data, at, text)
        purposes, at = _texts(data, at, text)
        byte = data[at]
        if byte == 0:
            granted, at = b"null", at + 1
        elif byte == 2 and data[at + 1] < 2:
            granted, at = (b"true" if data[at + 1] else b"false"), at + 2
        else:
            raise _Unusual
        recipient, at = _optional(data, at, text)
        actor_role, at = _optional(data, at, text)
        byte = data[at]
        if byte != 0 and byte != 2:
            raise _Unusual
        decision, at = (b'"deny"' if byte else b'"allow"'), at + 1
        reason_code, at = text(data, at)
        length, at = _long(data, at)  # rule: often 64 bytes or more
        if length <= 0:
            raise _Unusual  # empty or negative: the codec's path says what is wrong
        rule = data[at : at + length]
        if len(rule) != length or not _JSON_AS_IT_IS(rule):
            raise _Unusual
        at += length
        policy_version, at = text(data, at)
        if at != len(data) or b'""' in (source, reason_code, policy_version):
            raise _Unusual  # bytes left over, or an empty required text
        known: Middle = (
            actor_role,
            categories,
            granted,
            decision,
            policy_version,
            purpose,
            purposes,
            reason_code,
            recipient,
            b'"%s"' % rule,
            source,
        )
        if len(self._middles) >= _MEMO_MAX:
            self._middles.clear()
        self._middles[data] = known
        return known

    def _text(self, data: bytes, at: int) -> tuple[bytes, int]:
        """The JSON of the text shorter than 64 bytes at ``at``, and where it ends."""
        length = data[at]
        if length & 0x81:
            raise _Unusual
        end = at + 1 + (length >> 1)
        if end > len(data):
            raise _Unusual
        raw = data[at:end]
        known = self._texts.get(raw)
        if known is None:
            if not _JSON_AS_IT_IS(raw[1:]):
                raise _Unusual
            if len(self._texts) >= _MEMO_MAX:
                self._texts.clear()
            known = self._texts[raw] = b'"%s"' % raw[1:]
        return known, end


_HEADER = SINGLE_OBJECT_MAGIC + AUDIT_RECORD_FINGERPRINT
_LENGTH_64 = b"\x80\x01"  # the zig-zag varint of 64
# Where the varint at a position ends (up to 63 bits); None (AttributeError on .end()) if not
_VARINT_END = cast(
    Callable[[bytes, int], re.Match[bytes]], re.compile(rb"[\x80-\xff]{0,8}[\x00-\x7f]").match
)


_VARINT_ENDS = bytes(0 if byte < 0x80 else 1 for byte in range(256))
"""``bytes.translate`` table: 0 where a byte ends a varint (below 0x80), 1 elsewhere."""
_TAIL_MOST = 4 * 9 + 2
"""Bytes at the end of a value that hold its last four varints (at most 9 bytes each, as
:data:`_VARINT_END` reads), its null erasure and the last byte before them."""


def _long(data: bytes, at: int) -> tuple[int, int]:
    """The Avro long (zig-zag varint) at ``at``, and where it ends."""
    byte = data[at]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), at + 1
    second = data[at + 1]  # two and three bytes unrolled: seqs, offsets, lengths
    if second < 0x80:
        value = (byte & 0x7F) | second << 7
        return (value >> 1) ^ -(value & 1), at + 2
    third = data[at + 2]
    if third < 0x80:
        value = (byte & 0x7F) | (second & 0x7F) << 7 | third << 14
        return (value >> 1) ^ -(value & 1), at + 3
    value, shift = byte & 0x7F, 7
    while byte & 0x80:
        if shift > 56:  # past 63 bits: the codec's business
            raise _Unusual
        at += 1
        byte = data[at]
        value |= (byte & 0x7F) << shift
        shift += 7
    return (value >> 1) ^ -(value & 1), at + 1


def _optional(
    data: bytes, at: int, text: Callable[[bytes, int], tuple[bytes, int]]
) -> tuple[bytes, int]:
    """The JSON of a null or a text shorter than 64 bytes (an Avro union) at ``at``, and
    where it ends."""
    byte = data[at]
    if byte == 0:
        return b"null", at + 1
    if byte != 2:
        raise _Unusual
    return text(data, at + 1)


def _texts(
    data: bytes, at: int, text: Callable[[bytes, int], tuple[bytes, int]]
) -> tuple[bytes, int]:
    """The JSON of an Avro array of texts shorter than 64 bytes (blocks shorter than 64
    items) at ``at``, and where it ends."""
    items: list[bytes] = []
    while True:
        count = data[at]
        at += 1
        if count == 0:
            return b"[" + b",".join(items) + b"]", at
        if count & 0x81:
            raise _Unusual
        for _ in range(count >> 1):
            item, at = text(data, at)
            items.append(item)


__all__ = ["AUDIT_RECORD_FINGERPRINT", "BATCH", "AuditRecordReader", "replay", "replay_line"]
