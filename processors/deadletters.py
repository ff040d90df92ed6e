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

from cryptography.exceptions import InvalidTag

from lifecycle.logging import get_logger
from lifecycle.observability import Metrics
from streams.envelope import associated_data, encrypt_value
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
    quarantine = keystore.encryption_keys([(QUARANTINE_SUBJECT, QUARANTINE_CATEGORY)])
    data_key = quarantine[(QUARANTINE_SUBJECT, QUARANTINE_CATEGORY)]
    position = f"{topic}/{partition}/{offset}"
    key_bytes, value_bytes = key or b"", value or b""
    payload = len(key_bytes).to_bytes(4, "big") + key_bytes + value_bytes
    sealed = encrypt_value(data_key, position, payload)
    headers: Headers = [
        ("lifecycle.source.topic", topic.encode()),
        ("lifecycle.source.partition", str(partition).encode()),
        ("lifecycle.source.offset", str(offset).encode()),
        ("lifecycle.error", error[:_MAX_ERROR].encode()),
        ("lifecycle.value.sha256", hashlib.sha256(value_bytes).hexdigest().encode()),
        ("lifecycle.quarantine.key_version", str(sealed["key_version"]).encode()),
    ]
    if redrive_of:
        headers.append((REDRIVE_OF, redrive_of[:200]))
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
    key = keystore.decryption_key(QUARANTINE_SUBJECT, QUARANTINE_CATEGORY, key_version)
    try:
        payload = key.aead.decrypt(
            sealed[:_NONCE],
            sealed[_NONCE:],
            associated_data(position, QUARANTINE_SUBJECT, QUARANTINE_CATEGORY),
        )
    except InvalidTag as exc:
        raise DecodeError(f"dead letter of {position} fails authentication") from exc
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

    def send(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: str,
        redrive_of: bytes | None = None,
    ) -> None:
        letter = dead_letter(
            self._keystore,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            error=error,
            redrive_of=redrive_of,
        )
        self._metrics.dead_lettered(topic)
        log.warning(
            "record.dead_lettered", topic=topic, partition=partition, offset=offset, error=error
        )
        self._outbox.produce(DEAD_LETTERS, letter.value, headers=letter.headers)
