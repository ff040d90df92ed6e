"""Dead letters: what could not be decoded or validated, kept without leaking its content.

A record that is not one of ours may be anything, plaintext personal data included, so its
bytes are never copied as they are: the value of a dead letter is the original key and value
AES-GCM encrypted under a quarantine data key (shreddable like any other), and the headers name
the source topic, partition, offset, the error and a SHA-256 of the original value. A record
that a redrive sent back (:mod:`processors.redrive`) and that fails again carries on the
redrive's header (``lifecycle.redrive.of``), so a ``redrive --all`` does not loop on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from core.logging import get_logger
from processors.metrics import Metrics
from streams.envelope import decrypt_bytes, encrypt_value
from streams.exceptions import DecodeError
from streams.keys import KeyStore
from streams.outbox import Outbox
from streams.topics import DEAD_LETTERS

log = get_logger(__name__)

QUARANTINE_SUBJECT = "quarantine"
QUARANTINE_CATEGORY = "dead_letter"
REDRIVE_OF = "lifecycle.redrive.of"
"""Header of a record sent back to customer.events by a redrive: the dead letter it came from."""
_MAX_ERROR = 400
_NONCE = 12

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Source:
    """A record a stage could not use, and where it was read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    redrive_of: bytes | None = None
    """The record's :data:`REDRIVE_OF` header (it was sent back by a redrive), carried on."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    value: bytes
    headers: Headers


def dead_letter(
    keystore: KeyStore,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: str,
    redrive_of: bytes | None = None,
) -> DeadLetter:
    """The dead letter for one record of ``topic``; ``error`` must not quote the record.
    ``redrive_of``: the record's :data:`REDRIVE_OF` header, carried on."""
    source = Source(topic, partition, offset, key, value, redrive_of)
    return sealed_letter(keystore, source, error)


def sealed_letter(keystore: KeyStore, source: Source, error: str) -> DeadLetter:
    """The dead letter for ``source``; ``error`` must not quote the record."""
    quarantine = keystore.encryption_keys([(QUARANTINE_SUBJECT, QUARANTINE_CATEGORY)])
    data_key = quarantine[(QUARANTINE_SUBJECT, QUARANTINE_CATEGORY)]
    position = f"{source.topic}/{source.partition}/{source.offset}"
    key_bytes, value_bytes = source.key or b"", source.value or b""
    payload = len(key_bytes).to_bytes(4, "big") + key_bytes + value_bytes
    sealed = encrypt_value(data_key, position, payload)
    headers: Headers = [
        ("lifecycle.source.topic", source.topic.encode()),
        ("lifecycle.source.partition", str(source.partition).encode()),
        ("lifecycle.source.offset", str(source.offset).encode()),
        ("lifecycle.error", error[:_MAX_ERROR].encode()),
        ("lifecycle.value.sha256", hashlib.sha256(value_bytes).hexdigest().encode()),
        ("lifecycle.quarantine.key_version", str(sealed["key_version"]).encode()),
    ]
    if source.redrive_of:
        headers.append((REDRIVE_OF, source.redrive_of[:200]))
    return DeadLetter(sealed["nonce"] + sealed["ciphertext"], headers)


def open_dead_letter(
    keystore: KeyStore, sealed: bytes, position: str, key_version: int
) -> tuple[bytes, bytes]:
    """The original (key, value) of a dead letter: the inverse of :func:`dead_letter`.

    ``position`` is its ``topic/partition/offset`` (from its headers). Raises
    :class:`~streams.exceptions.KeyShreddedError` when the quarantine key was destroyed and
    :class:`~streams.exceptions.DecodeError` when the bytes fail authentication.
    """
    if len(sealed) <= _NONCE:
        raise DecodeError("the dead letter's value is too short to be sealed")
    envelope = {
        "category": QUARANTINE_CATEGORY,
        "key_version": key_version,
        "nonce": sealed[:_NONCE],
        "ciphertext": sealed[_NONCE:],
    }
    payload = decrypt_bytes(keystore, position, QUARANTINE_SUBJECT, envelope)
    length = int.from_bytes(payload[:4], "big")
    if len(payload) < 4 + length:
        raise DecodeError(f"dead letter of {position} is malformed")
    return payload[4 : 4 + length], payload[4 + length :]


class DeadLetterQueue:
    """Sends records a stage cannot use to ``customer.events.dlq`` (see :func:`dead_letter`),
    through the stage's outbox: delivered when the outbox is flushed."""

    def __init__(self, outbox: Outbox, keystore: KeyStore, metrics: Metrics) -> None:
        self._outbox = outbox
        self._keystore = keystore
        self._metrics = metrics

    def send(self, source: Source, error: str) -> None:
        letter = sealed_letter(self._keystore, source, error)
        self._metrics.dead_lettered(source.topic)
        log.warning(
            "record.dead_lettered",
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            error=error,
            redrive_of=source.redrive_of,
        )
        self._outbox.produce(DEAD_LETTERS, letter.value, headers=letter.headers)
