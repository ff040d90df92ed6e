"""Field-level encryption of personal values with the data keys of :mod:`streams.keys`.

Each value is AES-256-GCM encrypted under its (subject, category) data key with a fresh 96-bit
nonce; the associated data binds the ciphertext to its event, subject and category, so a value
cannot be replayed into another event or category unnoticed.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.exceptions import DecodeError, KeyShreddedError
from streams.keys import DataKey, KeyStore

SHREDDED = "[shredded]"
"""What any reader shows in place of a value whose key was destroyed."""


def associated_data(event_id: str, subject_ref: str, category: str) -> bytes:
    return f"{event_id}\x1f{subject_ref}\x1f{category}".encode()


def encrypt_value(key: DataKey, event_id: str, plaintext: str | bytes) -> dict[str, Any]:
    """An ``EncryptedValue`` record for ``plaintext``."""
    nonce = os.urandom(12)
    raw = plaintext.encode() if isinstance(plaintext, str) else plaintext
    ciphertext = key.aead.encrypt(
        nonce, raw, associated_data(event_id, key.subject_ref, key.category)
    )
    return {
        "category": key.category,
        "key_version": key.version,
        "nonce": nonce,
        "ciphertext": ciphertext,
    }


class ValueSealer:
    """Encrypts the values of one batch as :func:`encrypt_value` does, with one AES-GCM
    object per data key (a customer's values share keys) and nonces drawn from the system's
    random source in bulk rather than one call a value. Made per batch and dropped after it,
    so no cipher object outlives the batch (a key shredded later is not kept alive here)."""

    __slots__ = ("_ciphers", "_drawn", "_random")

    _DRAW = 12 * 512

    def __init__(self) -> None:
        self._ciphers: dict[tuple[str, str, int], AESGCM] = {}
        self._random = b""
        self._drawn = 0

    def _nonce(self) -> bytes:
        at = self._drawn
        if at + 12 > len(self._random):
            self._random, at = os.urandom(self._DRAW), 0
        self._drawn = at + 12
        return self._random[at : at + 12]

    def seal(self, key: DataKey, event_id: str, plaintext: str | bytes) -> dict[str, Any]:
        """An ``EncryptedValue`` record for ``plaintext``."""
        name = (key.subject_ref, key.category, key.version)
        cipher = self._ciphers.get(name)
        if cipher is None:
            cipher = self._ciphers[name] = key.aead
        nonce = self._nonce()
        raw = plaintext.encode() if isinstance(plaintext, str) else plaintext
        return {
            "category": key.category,
            "key_version": key.version,
            "nonce": nonce,
            "ciphertext": cipher.encrypt(
                nonce, raw, associated_data(event_id, key.subject_ref, key.category)
            ),
        }


def decrypt_value(
    keystore: KeyStore, event_id: str, subject_ref: str, value: dict[str, Any]
) -> str:
    """The plaintext of an ``EncryptedValue``; :class:`KeyShreddedError` once shredded."""
    return decrypt_bytes(keystore, event_id, subject_ref, value).decode()


def decrypt_bytes(
    keystore: KeyStore, event_id: str, subject_ref: str, value: dict[str, Any]
) -> bytes:
    """The raw bytes sealed in an ``EncryptedValue`` (a dead letter seals bytes, not text);
    :class:`KeyShreddedError` once shredded, :class:`DecodeError` when they fail
    authentication."""
    key = keystore.decryption_key(subject_ref, value["category"], value["key_version"])
    try:
        return key.aead.decrypt(
            value["nonce"],
            value["ciphertext"],
            associated_data(event_id, subject_ref, value["category"]),
        )
    except InvalidTag as exc:
        raise DecodeError(
            f"value of category {value['category']} fails authentication (tampered or misplaced)"
        ) from exc


def opens(key: DataKey, event_id: str, subject_ref: str, value: dict[str, Any]) -> bool:
    """Whether ``key`` decrypts ``value`` of that event and subject (the plaintext is dropped)."""
    try:
        key.aead.decrypt(
            value["nonce"],
            value["ciphertext"],
            associated_data(event_id, subject_ref, value["category"]),
        )
    except (InvalidTag, ValueError):  # ValueError: a nonce that is not 12 bytes
        return False
    return True


def reveal(keystore: KeyStore, event_id: str, subject_ref: str, value: dict[str, Any]) -> str:
    """Like :func:`decrypt_value`, but shows :data:`SHREDDED` for a destroyed key."""
    try:
        return decrypt_value(keystore, event_id, subject_ref, value)
    except KeyShreddedError:
        return SHREDDED
