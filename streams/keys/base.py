"""What a key store is: the data keys it hands out, what it records about them, and the
:class:`KeyStore` protocol every process that encrypts or decrypts holds one of."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_LEN = 32
"""Bytes of every key: the master key, data keys and the pseudonym key (AES-256, HMAC-SHA256)."""

IDENTITY_CATEGORY = "subject_id"
"""The reserved category whose key encrypts ``subject_id`` itself."""

SKIPPED = "version_skipped"
"""The shred reason of a version number reserved without a key: the newest version then has no
key, so the next value of the pair gets a newer one (see :meth:`KeyStore.rotate`)."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """An unwrapped data key, ready to encrypt or decrypt.

    The cache keeps the 32 secret bytes, not a cipher object: a cipher object takes many
    times that memory, and building one when it is needed is cheap.
    """

    subject_ref: str
    category: str
    version: int
    secret: bytes = field(repr=False)

    @property
    def aead(self) -> AESGCM:
        return AESGCM(self.secret)


@dataclass(frozen=True, slots=True)
class Shredding:
    """What one shred destroys: the live keys of a subject's ``categories`` (all when None),
    only those created before ``created_before`` when it is given, and why."""

    subject_ref: str
    categories: tuple[str, ...] | None
    reason: str
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the store holds about one data key (never its bytes)."""

    subject_ref: str
    category: str
    version: int
    created_at: datetime
    shredded_at: datetime | None
    shred_reason: str | None


@dataclass(frozen=True, slots=True)
class Versions:
    """Some versions of one category's data key: every one up to ``through`` (0: none by
    range), and ``exactly`` these."""

    through: int = 0
    exactly: frozenset[int] = frozenset()

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and (version <= self.through or version in self.exactly)

    def __bool__(self) -> bool:
        return self.through > 0 or bool(self.exactly)


VersionRef = tuple[str, str, int]
"""(subject_ref, category, version): one data key version."""


class KeyStore(Protocol):
    """Where data keys live. Every process that encrypts or decrypts holds one."""

    def subject_ref(self, subject_id: str) -> str: ...

    def encryption_keys(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], DataKey]:
        """The current key of each (subject_ref, category), created when there is none."""
        ...

    def isolated_keys(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], DataKey]:
        """A new version of each pair that never becomes current: only the caller's values
        are encrypted under it."""
        ...

    def rotate(self, subject_ref: str, categories: Iterable[str] | None) -> dict[str, int]:
        """End the current version of ``categories`` (every category of the subject when
        None) without destroying it: later values get a newer version. Category -> the
        newest version ended (0: the category had none)."""
        ...

    def decryption_key(
        self, subject_ref: str, category: str, version: int, *, check_live: bool = True
    ) -> DataKey:
        """The key a value was encrypted with; :class:`KeyShreddedError` once destroyed."""
        ...

    def decryption_keys(self, versions: Iterable[VersionRef]) -> dict[VersionRef, DataKey]:
        """The keys of ``versions`` that the store holds live now (the others are missing:
        destroyed, or never made by this store)."""
        ...

    def made_versions(self, versions: Iterable[VersionRef]) -> set[VersionRef]:
        """Those of ``versions`` this store made, live or destroyed since."""
        ...

    def shred(
        self,
        subject_ref: str,
        categories: Iterable[str] | None,
        reason: str,
        *,
        created_before: datetime | None = None,
    ) -> list[str]:
        """Destroy the live keys of ``categories`` (all when None), only those created before
        ``created_before`` when given; the categories shredded."""
        ...

    def shred_versions(
        self, subject_ref: str, selection: Mapping[str, Versions], reason: str
    ) -> dict[str, list[int]]:
        """Destroy exactly the live versions ``selection`` names (category -> versions);
        category -> the versions this call destroyed."""
        ...

    def keys_of(self, subject_ref: str) -> list[KeyRecord]: ...

    def forget(self, subject_ref: str, categories: Iterable[str] | None = None) -> None:
        """Drop cached keys (another process shredded them)."""
        ...

    def forget_all(self) -> None:
        """Drop every cached key (whatever was revoked, the store says what lives)."""
        ...
