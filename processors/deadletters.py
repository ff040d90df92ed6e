"""Dead letters: what could not be decoded or validated, kept without leaking its content.

A record that is not one of ours may be anything, plaintext personal data included, so its
bytes are never copied as they are: the value of a dead letter is the original key and value
AES-GCM encrypted under a quarantine data key (shreddable like any other), and the headers name
the source topic, partition, offset, the error and a SHA-256 of the original value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from core.logging import get_logger
from processors.metrics import Metrics
from streams.envelope import encrypt_value
from streams.keys import KeyStore
from streams.outbox import Outbox
from streams.topics import DEAD_LETTERS

log = get_logger(__name__)

QUARANTINE_SUBJECT = "quarantine"
QUARANTINE_CATEGORY = "dead_letter"
_MAX_ERROR = 400

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Source:
    """A record a stage could not use, and where it was read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


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
) -> DeadLetter:
    """The dead letter for one record of ``topic``; ``error`` must not quote the record."""
    return sealed_letter(keystore, Source(topic, partition, offset, key, value), error)


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
    return DeadLetter(sealed["nonce"] + sealed["ciphertext"], headers)


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
        )
        self._outbox.produce(DEAD_LETTERS, letter.value, headers=letter.headers)
