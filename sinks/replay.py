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

from sinks.canonical import canonical_bytes, canonical_hash, flat_canonical_bytes
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
_VERDICTS = ("allow", "deny")  # the Verdict enum's symbols, in order
_MOMENTS_MAX = 4096
_MILLIS_TEXT = tuple(f".{n:03d}Z" for n in range(1000))


class AuditRecordReader:
    """Reads a ``privacy.audit`` value written with :data:`AUDIT_RECORD_FINGERPRINT` and no
    erasure into the canonical encoding :func:`~sinks.canonical.canonical_bytes` would give for
    its stored row, hashes it as :func:`~sinks.canonical.row_hash` would, and makes its line.

    Declines (returns None) anything else or anything unusual: another schema, an erasure,
    text that is not ASCII, a text of 64 bytes or more (other than the 64-digit hashes and
    pseudonym, and ``rule``), an array of 64 texts or more, an empty required text, a varint
    longer than 63 bits, a non-canonical union, enum or boolean byte, a negative length, a
    time out of range, trailing or missing bytes. The caller then takes the codec's path, so
    a declined record is checked (or refused) exactly as before.

    Texts are cut from the value decoded as Latin-1, which is its UTF-8 decoding when they are
    ASCII; that is checked once per record, on the canonical bytes (any other character would
    be encoded there as non-ASCII UTF-8).
    """

    __slots__ = ("_moments", "_seconds")

    def __init__(self) -> None:
        self._moments: dict[bytes, str] = {}  # varint -> text
        self._seconds: dict[int, str] = {}  # whole second -> text

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

    def _moment(self, varint: bytes) -> str:
        """A timestamp-millis (its varint bytes) as the canonical encoding's UTC text."""
        known = self._moments.get(varint)
        if known is None:
            if len(self._moments) >= _MOMENTS_MAX:
                self._moments.clear()
            if len(varint) == 6:  # 2001..2112, unrolled
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
                if len(self._seconds) >= _MOMENTS_MAX:
                    self._seconds.clear()
                moment = _EPOCH + timedelta(seconds=second)
                whole = self._seconds[second] = moment.isoformat()[:-6]  # no "+00:00"
            # as utc_text(_EPOCH + timedelta(milliseconds=...)), without formatting each time
            known = whole + _MILLIS_TEXT[millis]
            self._moments[varint] = known
        return known

    def _moment_at(self, data: bytes, at: int) -> tuple[str, int]:
        """The timestamp at ``at`` as text, and where it ends."""
        known = self._moments.get(data[at : at + 6])  # a 6-byte varint (2001..2112) seen before
        if known is not None:
            return known, at + 6
        end = _VARINT_END(data, at).end()
        return self._moment(data[at:end]), end

    def _read(self, data: bytes) -> Read:
        # Field by field in the schema's order: this runs once per record. A text shorter
        # than 64 bytes has a one-byte length (even: zig-zag), 64 is 0x80 0x01.
        if data[:10] != _HEADER:
            raise _Unusual
        text = data.decode("latin-1")
        moment = self._moment_at
        seq, at = _long(data, 10)
        prev_hash, at = _hash_text(data, text, at)
        stored_hash, at = _hash_text(data, text, at)
        recorded_text, at = moment(data, at)
        event_id, at = _short_text(data, text, at)
        kind, at = _short_text(data, text, at)
        subject_ref, at = _hash_text(data, text, at)
        source, at = _short_text(data, text, at)
        categories: list[str]
        if data[at] == 2 and not data[at + 1] & 0x81 and not data[at + 2 + (data[at + 1] >> 1)]:
            end = at + 2 + (data[at + 1] >> 1)  # one category: usually
            categories, at = [text[at + 2 : end]], end + 1
        else:
            categories, at = _short_texts(data, text, at)
        purpose, at = _optional_text(data, text, at)
        purposes: list[str]
        if data[at] == 0:  # usually
            purposes, at = [], at + 1
        else:
            purposes, at = _short_texts(data, text, at)
        byte = data[at]
        if byte == 0:
            granted, at = None, at + 1
        elif byte == 2 and data[at + 1] < 2:
            granted, at = data[at + 1] == 1, at + 2
        else:
            raise _Unusual
        recipient, at = _optional_text(data, text, at)
        actor_role, at = _optional_text(data, text, at)
        byte = data[at]
        if byte != 0 and byte != 2:
            raise _Unusual
        verdict, at = _VERDICTS[byte >> 1], at + 1
        reason_code, at = _short_text(data, text, at)
        length, at = _long(data, at)  # rule: often 64 bytes or more
        if length < 0:
            raise _Unusual
        rule, at = text[at : at + length], at + length
        policy_version, at = _short_text(data, text, at)
        occurred_text, at = moment(data, at)
        decided_text, at = moment(data, at)
        source_partition, at = _long(data, at)
        source_offset, at = _long(data, at)
        if data[at] != 0 or at + 1 != len(data):  # an erasure, or bytes missing or left over
            raise _Unusual
        if not (
            event_id and kind and subject_ref and source and reason_code and rule and policy_version
        ):
            raise _Unusual  # the codec's path says which field
        record = {
            "seq": seq,
            "event_id": event_id,
            "kind": kind,
            "subject_ref": subject_ref,
            "source": source,
            "categories": categories,
            "purpose": purpose,
            "purposes": purposes,
            "consent_granted": granted,
            "recipient": recipient,
            "actor_role": actor_role,
            "decision": verdict,
            "reason_code": reason_code,
            "rule": rule,
            "policy_version": policy_version,
            "occurred_at": occurred_text,
            "decided_at": decided_text,
            "source_partition": source_partition,
            "source_offset": source_offset,
            "erasure": None,
            "recorded_at": recorded_text,
            "prev_hash": prev_hash,
        }
        canonical = flat_canonical_bytes(record)  # the canonical keys, timestamps as text
        if not (canonical.isascii() and stored_hash.isascii()):
            raise _Unusual  # a text that was not ASCII: cut as Latin-1, it is wrong
        return (
            b'%s,"hash":"%s"}' % (canonical[:-1], stored_hash.encode()),  # replay_line
            seq,
            prev_hash,
            stored_hash,
            canonical_hash(canonical),
        )


_HEADER = SINGLE_OBJECT_MAGIC + AUDIT_RECORD_FINGERPRINT
# Where the varint at a position ends (up to 63 bits); None (AttributeError on .end()) if not
_VARINT_END = cast(
    Callable[[bytes, int], re.Match[bytes]], re.compile(rb"[\x80-\xff]{0,8}[\x00-\x7f]").match
)


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


def _short_text(data: bytes, text: str, at: int) -> tuple[str, int]:
    """A text shorter than 64 bytes at ``at``, cut from ``text``, and where it ends."""
    byte = data[at]
    if byte & 0x81:
        raise _Unusual
    end = at + 1 + (byte >> 1)
    return text[at + 1 : end], end


def _hash_text(data: bytes, text: str, at: int) -> tuple[str, int]:
    """A 64-byte text (a hash, a pseudonym) at ``at``, and where it ends."""
    if data[at] != 0x80 or data[at + 1] != 1:
        raise _Unusual
    return text[at + 2 : at + 66], at + 66


def _optional_text(data: bytes, text: str, at: int) -> tuple[str | None, int]:
    """A null or a text shorter than 64 bytes (an Avro union) at ``at``, and where it ends."""
    byte = data[at]
    if byte == 0:
        return None, at + 1
    if byte != 2 or data[at + 1] & 0x81:
        raise _Unusual
    end = at + 2 + (data[at + 1] >> 1)
    return text[at + 2 : end], end


def _short_texts(data: bytes, text: str, at: int) -> tuple[list[str], int]:
    """An Avro array of texts shorter than 64 bytes (blocks shorter than 64 items) at ``at``,
    cut from ``text`` (see :class:`AuditRecordReader`), and where it ends."""
    out: list[str] = []
    while True:
        count = data[at]
        at += 1
        if count == 0:
            return out, at
        if count & 0x81:
            raise _Unusual
        for _ in range(count >> 1):
            item, at = _short_text(data, text, at)
            out.append(item)


__all__ = ["AUDIT_RECORD_FINGERPRINT", "BATCH", "AuditRecordReader", "replay", "replay_line"]
