"""Envelope encryption for personal data: a master key wraps one data key per subject and category.

* The **master key** (key-encryption key, 32 random bytes) lives in ``LIFECYCLE_MASTER_KEY_FILE``,
  created with mode 0600 on first use; a file that others can read is refused.
* Each (``subject_ref``, ``category``) has numbered AES-256-GCM **data key** versions, stored
  wrapped (AES-GCM under the master key); several may be live at once. The newest version, when
  it is live, is the *current* one: new values are encrypted under it. Shredding sets a
  version's wrapped key to NULL: every copy of every value encrypted under it, on any topic or
  table, is unreadable from then on. A later collection gets a newer version, so erased values
  never come back.
* :meth:`EnvelopeKeyStore.rotate` ends a pair's current version without destroying it (an
  erasure request does, when it is published: values after it get a newer version), and
  :meth:`EnvelopeKeyStore.isolated_keys` makes a version no other value shares (for a
  collection the policy will refuse). Both reserve a version number above the last one without
  a key (:data:`SKIPPED`), so the version they end or set apart never becomes current.
* :meth:`EnvelopeKeyStore.shred_versions` destroys exactly the versions it is given.
* ``subject_ref`` is HMAC-SHA256 of ``subject_id`` under a pseudonym key kept (wrapped) in the
  store, so it is stable across master-key rotations.
* A wrong master key is detected at open through a key-check value, never by garbage output.

:class:`SqlKeyStore` keeps keys in any SQLAlchemy database; :class:`MemoryKeyStore` keeps them
in a dict (unit tests). Both share the wrapping and the bounded cache of unwrapped keys
(:mod:`streams.keycache`), which :meth:`EnvelopeKeyStore.warm` can fill from the store ahead
of the traffic.
"""

from __future__ import annotations

import base64
import hmac
import os
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from lifecycle.db import create_tables
from lifecycle.logging import get_logger
from lifecycle.secretfiles import create_secret_file
from streams.exceptions import KeyShreddedError, KeyStoreError, WrongMasterKeyError
from streams.keycache import KeyCache

log = get_logger(__name__)

IDENTITY_CATEGORY = "subject_id"
"""The reserved category whose key encrypts ``subject_id`` itself."""

_KEK_CHECK_PLAINTEXT = b"lifecycle key-check value v1"
_NONCE_LEN = 12
_KEY_LEN = 32
DEFAULT_CACHE_SIZE = 1_000_000
"""Customers whose unwrapped keys a process keeps (about 300 bytes each with three
categories: see :mod:`streams.keycache`)."""
WARM_CHUNK = 20_000
SKIPPED = "version_skipped"
"""The shred reason of a version number reserved without a key: the newest version then has no
key, so the next value of the pair gets a newer one (see :meth:`EnvelopeKeyStore.rotate`)."""
_RACES = 20
"""Attempts at reserving version numbers that other processes keep taking first."""


# --------------------------------------------------------------------------- master key


def load_master_key(path: Path, *, create: bool = True) -> bytes:
    """Read the 32-byte master key from ``path``; create it (mode 0600) when absent."""
    if not path.exists():
        if not create:
            raise KeyStoreError(f"master key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        if create_secret_file(path, base64.b64encode(key) + b"\n"):
            return key
        return load_master_key(path, create=False)  # another process created it first
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(
            f"master key file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            "run: chmod 600 " + str(path)
        )
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (ValueError, OSError) as exc:
        raise KeyStoreError(f"master key file {path} is not base64 text: {exc}") from exc
    if len(key) != _KEY_LEN:
        raise KeyStoreError(f"master key file {path} holds {len(key)} bytes, expected 32")
    return key


# --------------------------------------------------------------------------- interface


@dataclass(frozen=True, slots=True)
class DataKey:
    """An unwrapped data key, ready to encrypt or decrypt.

    The cache keeps the 32 secret bytes, not a cipher object: an ``AESGCM`` object costs about
    2.4 KB, building one costs about a microsecond (measured by the benchmarks).
    """

    subject_ref: str
    category: str
    version: int
    secret: bytes = field(repr=False)

    @property
    def aead(self) -> AESGCM:
        return AESGCM(self.secret)


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


# --------------------------------------------------------------------------- shared logic


class _Forgotten:
    """The customers whose cached keys were dropped while a read of the store ran."""

    __slots__ = ("everyone", "refs")

    def __init__(self) -> None:
        self.refs: set[str] = set()
        self.everyone = False

    def add(self, subject_ref: str) -> None:
        self.refs.add(subject_ref)

    def __contains__(self, subject_ref: object) -> bool:
        return self.everyone or subject_ref in self.refs


class EnvelopeKeyStore(ABC):
    """Wrapping, pseudonyms and the bounded cache; subclasses store wrapped keys."""

    def __init__(
        self,
        master_key: bytes,
        *,
        previous_master_keys: Sequence[bytes] = (),
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._kek = AESGCM(master_key)
        # During a master-key rotation, keys not yet re-wrapped still open with the old one.
        self._keks = (self._kek, *(AESGCM(key) for key in previous_master_keys))
        self._lock = threading.RLock()
        self._cache = KeyCache(cache_size)
        self._watchers: list[_Forgotten] = []
        """One set per read of the store in progress (a lookup, :meth:`warm`): the customers
        forgotten meanwhile, which it must not cache from what it read before (a rotation or
        a shred heard between the read and the caching would be undone)."""
        self.cache_hits = 0
        self.cache_misses = 0
        self._pseudonym_key = self._open()

    # -- storage (subclasses) -------------------------------------------------------------

    @abstractmethod
    def _get_meta(self, name: str) -> bytes | None: ...

    @abstractmethod
    def _put_meta_if_absent(self, name: str, value: bytes) -> bytes:
        """Store ``value`` unless ``name`` exists; return what is stored."""

    @abstractmethod
    def _load_current(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, bytes | None]]:
        """Latest version and wrapped key (None: shredded) of each pair that has any key."""

    @abstractmethod
    def _insert_keys(self, rows: Sequence[tuple[str, str, int, bytes]]) -> None:
        """Insert new key versions; silently skip ones another process created first."""

    @abstractmethod
    def _insert_versions(self, rows: Sequence[tuple[str, str, int, bytes | None]]) -> bool:
        """Insert all of ``rows`` or none (False: another process took one of the versions
        first). A row without a wrapped key reserves its version number (:data:`SKIPPED`)."""

    @abstractmethod
    def _load_wrapped(self, subject_ref: str, category: str, version: int) -> bytes | None: ...

    @abstractmethod
    def _load_versions(self, versions: Sequence[VersionRef]) -> dict[VersionRef, bytes | None]:
        """The wrapped key (None: shredded) of each of ``versions`` the store has a row for."""

    @abstractmethod
    def _destroy_versions(
        self, subject_ref: str, selection: Mapping[str, Versions], reason: str
    ) -> dict[str, list[int]]: ...

    @abstractmethod
    def _iter_live(self, chunk: int) -> Iterable[list[tuple[str, str, int, bytes]]]:
        """Every current, unshredded key (subject_ref, category, version, wrapped), in chunks
        that end at a customer's last key."""

    @abstractmethod
    def _destroy(
        self,
        subject_ref: str,
        categories: Iterable[str] | None,
        reason: str,
        created_before: datetime | None = None,
    ) -> list[str]: ...

    @abstractmethod
    def keys_of(self, subject_ref: str) -> list[KeyRecord]: ...

    # -- wrapping ----------------------------------------------------------------------

    def _wrap(self, key: bytes, label: str) -> bytes:
        nonce = os.urandom(_NONCE_LEN)
        return nonce + self._kek.encrypt(nonce, key, label.encode())

    def _unwrap(self, wrapped: bytes, label: str) -> bytes:
        for kek in self._keks:
            try:
                return kek.decrypt(wrapped[:_NONCE_LEN], wrapped[_NONCE_LEN:], label.encode())
            except InvalidTag:
                continue
        raise WrongMasterKeyError(f"a data key ({label}) does not open with this master key")

    def _rewrap(self, wrapped: bytes, label: str) -> bytes | None:
        """``wrapped`` under the current master key; None when it already is."""
        try:
            self._kek.decrypt(wrapped[:_NONCE_LEN], wrapped[_NONCE_LEN:], label.encode())
            return None
        except InvalidTag:
            return self._wrap(self._unwrap(wrapped, label), label)

    def _open(self) -> bytes:
        check = self._put_meta_if_absent("kek_check", self._wrap(_KEK_CHECK_PLAINTEXT, "kek_check"))
        try:
            if self._unwrap(check, "kek_check") != _KEK_CHECK_PLAINTEXT:
                raise WrongMasterKeyError("key-check value mismatch")
        except WrongMasterKeyError:
            raise WrongMasterKeyError(
                "the master key does not open this key store (wrong LIFECYCLE_MASTER_KEY_FILE, "
                "or the store was created with another key); refusing to start"
            ) from None
        wrapped = self._put_meta_if_absent(
            "pseudonym_key", self._wrap(os.urandom(_KEY_LEN), "pseudonym_key")
        )
        return self._unwrap(wrapped, "pseudonym_key")

    @staticmethod
    def _label(subject_ref: str, category: str, version: int) -> str:
        return f"{subject_ref}/{category}/{version}"

    # -- public API ----------------------------------------------------------------------

    def subject_ref(self, subject_id: str) -> str:
        return hmac.digest(self._pseudonym_key, subject_id.encode(), "sha256").hex()

    def encryption_keys(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], DataKey]:
        result: dict[tuple[str, str], DataKey] = {}
        missing: list[tuple[str, str]] = []
        with self._lock:
            current = self._cache.current
            for pair in dict.fromkeys(pairs):
                cached = current(*pair)
                if cached is None:
                    missing.append(pair)
                else:
                    self.cache_hits += 1
                    result[pair] = DataKey(pair[0], pair[1], *cached)
        if not missing:
            return result
        self.cache_misses += len(missing)
        with self._watching() as forgotten:
            self._fill_current(missing, result, forgotten)
        return result

    def _fill_current(
        self,
        missing: list[tuple[str, str]],
        result: dict[tuple[str, str], DataKey],
        forgotten: _Forgotten,
    ) -> None:
        """The current keys of ``missing`` into ``result`` (created where there is none), and
        into the cache unless their customer was forgotten while the store was read."""
        try:
            found = self._load_current(missing)
            new_rows: list[tuple[str, str, int, bytes]] = []
            for pair in missing:
                version, wrapped = found.get(pair, (0, None))
                if wrapped is None:  # never had a key, or the last one was shredded
                    version += 1
                    new_rows.append(
                        (
                            *pair,
                            version,
                            self._wrap(AESGCM.generate_key(256), self._label(*pair, version)),
                        )
                    )
            if new_rows:
                self._insert_keys(new_rows)
                found = {**found, **self._load_current([row[:2] for row in new_rows])}
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc
        with self._lock:
            for pair in missing:
                version, wrapped = found[pair]
                if wrapped is None:
                    raise KeyStoreError(
                        f"data key {pair[1]} of {pair[0]} was shredded while created"
                    )
                key = DataKey(
                    pair[0],
                    pair[1],
                    version,
                    self._unwrap(wrapped, self._label(*pair, version)),
                )
                if pair[0] not in forgotten:
                    self._cache.put_current(*pair, version, key.secret)
                result[pair] = key

    @contextmanager
    def _watching(self) -> Iterator[_Forgotten]:
        """Collects the customers forgotten while the block runs."""
        forgotten = _Forgotten()
        with self._lock:
            self._watchers.append(forgotten)
        try:
            yield forgotten
        finally:
            with self._lock:
                self._watchers.remove(forgotten)

    def isolated_keys(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], DataKey]:
        """A new version of each pair that never becomes current, so that only the caller's
        values are encrypted under it (a collection the policy will refuse: destroying its
        key then destroys nothing else). It is created together with the next version number
        reserved without a key, in one transaction: whoever reads the pair's current key
        afterwards finds that one newest, without a key, and creates a newer one."""
        wanted = list(dict.fromkeys(pairs))
        if not wanted:
            return {}
        try:
            for _attempt in range(_RACES):
                found = self._load_current(wanted)
                rows: list[tuple[str, str, int, bytes | None]] = []
                keys: dict[tuple[str, str], DataKey] = {}
                for pair in wanted:
                    version = found.get(pair, (0, None))[0] + 1
                    secret = AESGCM.generate_key(256)
                    rows.append((*pair, version, self._wrap(secret, self._label(*pair, version))))
                    rows.append((*pair, version + 1, None))
                    keys[pair] = DataKey(pair[0], pair[1], version, secret)
                if self._insert_versions(rows):
                    return keys
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc
        raise KeyStoreError("isolated key versions were taken by other processes every time")

    def rotate(self, subject_ref: str, categories: Iterable[str] | None) -> dict[str, int]:
        """End the current version of ``categories`` (every category the subject has a key
        of, its ``subject_id`` key included, when None) without destroying anything: the
        next version number is reserved without a key, so whoever encrypts a value of the
        pair next creates a newer version. Category -> the newest version ended (0: none
        existed; also named, so that a version created later is never mistaken for one
        before). The cached keys of those categories are dropped here; other processes drop
        theirs when they hear of it (see :mod:`streams.revocations`)."""
        wanted = None if categories is None else sorted(set(categories))
        try:
            for _attempt in range(_RACES):
                latest: dict[str, KeyRecord] = {}
                for record in self.keys_of(subject_ref):
                    if (
                        record.category not in latest
                        or record.version > latest[record.category].version
                    ):
                        latest[record.category] = record
                targets = sorted(latest) if wanted is None else wanted
                ended: dict[str, int] = {}
                reserved: list[tuple[str, str, int, bytes | None]] = []
                for category in targets:
                    newest = latest.get(category)
                    ended[category] = 0 if newest is None else newest.version
                    if newest is not None and newest.shredded_at is None:
                        reserved.append((subject_ref, category, newest.version + 1, None))
                if not reserved or self._insert_versions(reserved):
                    self.forget(subject_ref, targets)
                    return ended
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc
        raise KeyStoreError("key versions were taken by other processes at every rotation attempt")

    def decryption_key(
        self, subject_ref: str, category: str, version: int, *, check_live: bool = True
    ) -> DataKey:
        """The key a value was encrypted with; :class:`KeyShreddedError` once destroyed.

        With ``check_live`` (the default) the store is asked whether the key still exists even
        when it is cached, so no process decrypts a shredded value once the shred committed,
        however late its cache hears of it. Decryption is rare (access reports, debugging);
        encryption, the hot path, relies on the cache and on key-revocation records.
        """
        with self._lock:
            secret = self._cache.get(subject_ref, category, version)
        key = None if secret is None else DataKey(subject_ref, category, version, secret)
        try:
            wrapped = (
                self._load_wrapped(subject_ref, category, version)
                if key is None or check_live
                else None
            )
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc
        if key is not None and (not check_live or wrapped is not None):
            self.cache_hits += 1
            return key
        if wrapped is None:
            self.forget(subject_ref, [category])
            raise KeyShreddedError(f"data key {category} v{version} of {subject_ref} is shredded")
        self.cache_misses += 1
        label = self._label(subject_ref, category, version)
        key = DataKey(subject_ref, category, version, self._unwrap(wrapped, label))
        with self._lock:
            self._cache.put(subject_ref, category, version, key.secret)
        return key

    def decryption_keys(self, versions: Iterable[VersionRef]) -> dict[VersionRef, DataKey]:
        """The keys of ``versions`` the store holds live now; the others are left out
        (destroyed, or never made by this store). The store is always asked (one query per
        500), as :meth:`decryption_key` does; the cache only saves unwrapping."""
        wanted = list(dict.fromkeys(versions))
        if not wanted:
            return {}
        try:
            found = self._load_versions(wanted)
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc
        out: dict[VersionRef, DataKey] = {}
        for ref, wrapped in found.items():
            if wrapped is None:
                continue
            with self._lock:
                secret = self._cache.get(*ref)
            if secret is None:
                secret = self._unwrap(wrapped, self._label(*ref))
            out[ref] = DataKey(ref[0], ref[1], ref[2], secret)
        return out

    def shred_versions(
        self, subject_ref: str, selection: Mapping[str, Versions], reason: str
    ) -> dict[str, list[int]]:
        """Destroy exactly the live versions ``selection`` names; category -> the versions
        this call destroyed (a version destroyed before is not named again)."""
        wanted = {category: versions for category, versions in selection.items() if versions}
        if not wanted:
            return {}
        self.forget(subject_ref, wanted)
        try:
            destroyed = self._destroy_versions(subject_ref, wanted, reason)
        except SQLAlchemyError as exc:
            raise KeyStoreError(
                f"key store unavailable, nothing shredded: {type(exc).__name__}"
            ) from exc
        self.forget(subject_ref, wanted)
        return destroyed

    def shred(
        self,
        subject_ref: str,
        categories: Iterable[str] | None,
        reason: str,
        *,
        created_before: datetime | None = None,
    ) -> list[str]:
        wanted = None if categories is None else list(categories)
        self.forget(subject_ref, wanted)
        try:
            shredded = self._destroy(subject_ref, wanted, reason, created_before)
        except SQLAlchemyError as exc:
            raise KeyStoreError(
                f"key store unavailable, nothing shredded: {type(exc).__name__}"
            ) from exc
        self.forget(subject_ref, wanted)
        return shredded

    def forget(self, subject_ref: str, categories: Iterable[str] | None = None) -> None:
        with self._lock:
            self._cache.forget(subject_ref, categories)
            for forgotten in self._watchers:
                forgotten.add(subject_ref)

    def forget_all(self) -> None:
        with self._lock:
            self._cache = KeyCache(self._cache.max_subjects)
            for forgotten in self._watchers:
                forgotten.everyone = True

    def warm(self, *, stop: threading.Event | None = None) -> int:
        """Fill the cache with the store's current keys (until it is full), so that traffic
        finds them cached from its first event; the number of keys cached.

        Meant for a background thread of a long-running process: lookups go on meanwhile (a
        key they need first is read as usual), and a customer forgotten meanwhile (a shred
        here, a revocation heard from another process) is not cached from what was read
        before.
        """
        with self._watching() as forgotten:
            return self._warm(forgotten, stop)

    def _warm(self, forgotten: _Forgotten, stop: threading.Event | None) -> int:
        cached = 0
        try:
            for rows in self._iter_live(WARM_CHUNK):
                unwrapped = [
                    (ref, cat, version, self._unwrap(wrapped, self._label(ref, cat, version)))
                    for ref, cat, version, wrapped in rows
                ]
                with self._lock:
                    cache = self._cache
                    for ref, cat, version, secret in unwrapped:
                        if ref in forgotten or cache.current(ref, cat) is not None:
                            continue  # forgotten meanwhile, or cached by a lookup: newer
                        if ref not in cache and cache.subjects >= cache.max_subjects:
                            return cached  # full: the rest stays in the store
                        cache.put_current(ref, cat, version, secret)
                        cached += 1
                if stop is not None and stop.is_set():
                    break
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc
        return cached


def _live_chunks(
    rows: Iterable[tuple[str, str, int, bytes | None]], chunk: int
) -> Iterable[list[tuple[str, str, int, bytes]]]:
    """The latest version of each (subject_ref, category) of ``rows`` (sorted by subject_ref,
    category, version) when it is not shredded, in chunks of about ``chunk`` that end at a
    customer's last key."""
    out: list[tuple[str, str, int, bytes]] = []
    last: tuple[str, str, int, bytes | None] | None = None
    for row in rows:
        # last was its pair's latest version, and is live
        if last is not None and row[:2] != last[:2] and last[3] is not None:
            if len(out) >= chunk and out[-1][0] != last[0]:
                yield out
                out = []
            out.append(last)  # type: ignore[arg-type]
        last = row
    if last is not None and last[3] is not None:
        out.append(last)  # type: ignore[arg-type]
    if out:
        yield out


# --------------------------------------------------------------------------- in memory


class MemoryKeyStore(EnvelopeKeyStore):
    """Keys in a dict: for unit tests of pure logic, never for data that must survive."""

    def __init__(self, master_key: bytes | None = None, **kwargs: Any) -> None:
        self._meta: dict[str, bytes] = {}
        self._rows: dict[tuple[str, str, int], list[object]] = {}
        super().__init__(master_key or AESGCM.generate_key(256), **kwargs)

    def _get_meta(self, name: str) -> bytes | None:
        return self._meta.get(name)

    def _put_meta_if_absent(self, name: str, value: bytes) -> bytes:
        return self._meta.setdefault(name, value)

    def _load_current(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, bytes | None]]:
        out: dict[tuple[str, str], tuple[int, bytes | None]] = {}
        for (ref, cat, version), row in self._rows.items():
            if (ref, cat) in pairs and version > out.get((ref, cat), (0, None))[0]:
                out[(ref, cat)] = (version, row[0])  # type: ignore[assignment]
        return out

    def _insert_keys(self, rows: Sequence[tuple[str, str, int, bytes]]) -> None:
        for ref, cat, version, wrapped in rows:
            self._rows.setdefault((ref, cat, version), [wrapped, datetime.now(UTC), None, None])

    def _insert_versions(self, rows: Sequence[tuple[str, str, int, bytes | None]]) -> bool:
        if any(row[:3] in self._rows for row in rows):
            return False
        now = datetime.now(UTC)
        for ref, cat, version, wrapped in rows:
            skipped = wrapped is None
            self._rows[(ref, cat, version)] = [
                wrapped,
                now,
                now if skipped else None,
                SKIPPED if skipped else None,
            ]
        return True

    def _load_wrapped(self, subject_ref: str, category: str, version: int) -> bytes | None:
        row = self._rows.get((subject_ref, category, version))
        return None if row is None else row[0]  # type: ignore[return-value]

    def _load_versions(self, versions: Sequence[VersionRef]) -> dict[VersionRef, bytes | None]:
        return {
            ref: self._rows[ref][0]  # type: ignore[misc]
            for ref in versions
            if ref in self._rows
        }

    def _destroy_versions(
        self, subject_ref: str, selection: Mapping[str, Versions], reason: str
    ) -> dict[str, list[int]]:
        destroyed: dict[str, list[int]] = {}
        for (ref, cat, version), row in sorted(self._rows.items()):
            chosen = ref == subject_ref and cat in selection and version in selection[cat]
            if chosen and row[0] is not None:
                row[0], row[2], row[3] = None, datetime.now(UTC), reason
                destroyed.setdefault(cat, []).append(version)
        return destroyed

    def _destroy(
        self,
        subject_ref: str,
        categories: Iterable[str] | None,
        reason: str,
        created_before: datetime | None = None,
    ) -> list[str]:
        wanted = None if categories is None else set(categories)
        shredded = set()
        for (ref, cat, _), row in self._rows.items():
            if created_before is not None and cast(datetime, row[1]) >= created_before:
                continue
            if ref == subject_ref and (wanted is None or cat in wanted) and row[0] is not None:
                row[0], row[2], row[3] = None, datetime.now(UTC), reason
                shredded.add(cat)
        return sorted(shredded)

    def _iter_live(self, chunk: int) -> Iterable[list[tuple[str, str, int, bytes]]]:
        rows = ((*key, row[0]) for key, row in sorted(self._rows.items()))
        return _live_chunks(rows, chunk)  # type: ignore[arg-type]

    def keys_of(self, subject_ref: str) -> list[KeyRecord]:
        return [
            KeyRecord(ref, cat, version, row[1], row[2], row[3])  # type: ignore[arg-type]
            for (ref, cat, version), row in sorted(self._rows.items())
            if ref == subject_ref
        ]


# --------------------------------------------------------------------------- SQL


metadata = MetaData()

keystore_meta = Table(
    "keystore_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("subject_ref", String(64), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("wrapped_key", LargeBinary, nullable=True),  # NULL once shredded
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("shredded_at", DateTime(timezone=True), nullable=True),
    Column("shred_reason", String(64), nullable=True),
)


class SqlKeyStore(EnvelopeKeyStore):
    """Keys in a SQLAlchemy database (SQLite file by default, PostgreSQL in production)."""

    def __init__(self, engine: Engine, master_key: bytes, **kwargs: Any) -> None:
        self._engine = engine
        self._wiper = ThreadPoolExecutor(1, thread_name_prefix="key-wipe")
        self._wiping: Future[None] | None = None
        self._wipe_again = False
        try:
            create_tables(engine, metadata)
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store database unreachable: {exc}") from exc
        super().__init__(master_key, **kwargs)

    def _get_meta(self, name: str) -> bytes | None:
        with self._engine.connect() as conn:
            value = conn.execute(
                select(keystore_meta.c.value).where(keystore_meta.c.name == name)
            ).scalar_one_or_none()
        return value

    def _put_meta_if_absent(self, name: str, value: bytes) -> bytes:
        existing = self._get_meta(name)
        if existing is not None:
            return existing
        try:
            with self._engine.begin() as conn:
                conn.execute(keystore_meta.insert().values(name=name, value=value))
        except IntegrityError:
            pass  # another process stored it first
        stored = self._get_meta(name)
        assert stored is not None
        return stored

    def _load_current(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, bytes | None]]:
        out: dict[tuple[str, str], tuple[int, bytes | None]] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(pairs), 500):
                chunk = pairs[start : start + 500]
                rows = conn.execute(
                    select(
                        data_keys.c.subject_ref,
                        data_keys.c.category,
                        data_keys.c.version,
                        data_keys.c.wrapped_key,
                    )
                    # two plain INs use the primary key's index; SQLite scans the whole table
                    # for a row-value IN (EXPLAIN QUERY PLAN: SCAN data_keys)
                    .where(data_keys.c.subject_ref.in_({ref for ref, _ in chunk}))
                    .where(data_keys.c.category.in_({cat for _, cat in chunk}))
                )
                wanted = set(chunk)
                for ref, cat, version, wrapped in rows:
                    if (ref, cat) in wanted and version > out.get((ref, cat), (0, None))[0]:
                        out[(ref, cat)] = (version, wrapped)
        return out

    def _insert_keys(self, rows: Sequence[tuple[str, str, int, bytes]]) -> None:
        now = datetime.now(UTC)
        values = [
            {
                "subject_ref": ref,
                "category": cat,
                "version": version,
                "wrapped_key": wrapped,
                "created_at": now,
            }
            for ref, cat, version, wrapped in rows
        ]
        try:
            with self._engine.begin() as conn:  # the common case: one transaction for all
                conn.execute(data_keys.insert(), values)
            return
        except IntegrityError:
            pass
        for row in values:  # another process created some of them first: keep theirs
            try:
                with self._engine.begin() as conn:
                    conn.execute(data_keys.insert(), row)
            except IntegrityError:
                continue

    def _insert_versions(self, rows: Sequence[tuple[str, str, int, bytes | None]]) -> bool:
        now = datetime.now(UTC)
        values = [
            {
                "subject_ref": ref,
                "category": cat,
                "version": version,
                "wrapped_key": wrapped,
                "created_at": now,
                "shredded_at": now if wrapped is None else None,
                "shred_reason": SKIPPED if wrapped is None else None,
            }
            for ref, cat, version, wrapped in rows
        ]
        try:
            with self._engine.begin() as conn:
                conn.execute(data_keys.insert(), values)
        except IntegrityError:
            return False
        return True

    def _load_versions(self, versions: Sequence[VersionRef]) -> dict[VersionRef, bytes | None]:
        out: dict[VersionRef, bytes | None] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(versions), 500):
                chunk = versions[start : start + 500]
                wanted = set(chunk)
                rows = conn.execute(
                    select(
                        data_keys.c.subject_ref,
                        data_keys.c.category,
                        data_keys.c.version,
                        data_keys.c.wrapped_key,
                    )
                    # plain INs, as in _load_current (the primary key's index)
                    .where(data_keys.c.subject_ref.in_({ref for ref, _, _ in chunk}))
                    .where(data_keys.c.category.in_({cat for _, cat, _ in chunk}))
                    .where(data_keys.c.version.in_({version for _, _, version in chunk}))
                )
                for ref, cat, version, wrapped in rows:
                    if (ref, cat, version) in wanted:
                        out[(ref, cat, version)] = wrapped
        return out

    def _destroy_versions(
        self, subject_ref: str, selection: Mapping[str, Versions], reason: str
    ) -> dict[str, list[int]]:
        chosen = [
            and_(
                data_keys.c.category == category,
                or_(
                    data_keys.c.version <= versions.through,
                    data_keys.c.version.in_(sorted(versions.exactly)),
                ),
            )
            for category, versions in selection.items()
        ]
        live = and_(
            data_keys.c.subject_ref == subject_ref,
            data_keys.c.wrapped_key.is_not(None),
            or_(*chosen),
        )
        destroyed: dict[str, list[int]] = {}
        with self._engine.begin() as conn:
            found = conn.execute(
                select(data_keys.c.category, data_keys.c.version)
                .where(live)
                .order_by(data_keys.c.category, data_keys.c.version)
            ).all()
            for category, version in found:
                destroyed.setdefault(category, []).append(version)
            if found:
                conn.execute(
                    update(data_keys)
                    .where(live)
                    .values(wrapped_key=None, shredded_at=datetime.now(UTC), shred_reason=reason)
                )
        if destroyed and self._engine.dialect.name == "sqlite":
            self._wipe_soon()
        return destroyed

    def _load_wrapped(self, subject_ref: str, category: str, version: int) -> bytes | None:
        with self._engine.connect() as conn:
            value = conn.execute(
                select(data_keys.c.wrapped_key).where(
                    and_(
                        data_keys.c.subject_ref == subject_ref,
                        data_keys.c.category == category,
                        data_keys.c.version == version,
                    )
                )
            ).scalar_one_or_none()
        return value

    def _iter_live(self, chunk: int) -> Iterable[list[tuple[str, str, int, bytes]]]:
        # One short read per chunk, by key range, rather than one cursor over the whole
        # table: a long-lived snapshot would hold off the WAL checkpoint that wipes shredded
        # keys from disk (SQLite) and keep old row versions alive (PostgreSQL).
        columns = (
            data_keys.c.subject_ref,
            data_keys.c.category,
            data_keys.c.version,
            data_keys.c.wrapped_key,
        )
        ordered = select(*columns).order_by(*columns[:3])  # the primary key's order
        after = ""
        while True:
            with self._engine.connect() as conn:
                rows = [
                    tuple(row)
                    for row in conn.execute(
                        ordered.where(data_keys.c.subject_ref > after).limit(chunk)
                    )
                ]
                last_page = len(rows) < chunk
                if not last_page:  # the last customer may go on: keep only whole customers
                    cut = rows[-1][0]
                    rows = [row for row in rows if row[0] != cut] or [
                        tuple(row)
                        for row in conn.execute(ordered.where(data_keys.c.subject_ref == cut))
                    ]
            if rows:
                yield from _live_chunks(rows, len(rows))  # type: ignore[arg-type]
            if last_page or not rows:
                return
            after = rows[-1][0]

    def _destroy(
        self,
        subject_ref: str,
        categories: Iterable[str] | None,
        reason: str,
        created_before: datetime | None = None,
    ) -> list[str]:
        live = and_(data_keys.c.subject_ref == subject_ref, data_keys.c.wrapped_key.is_not(None))
        if categories is not None:
            live = and_(live, data_keys.c.category.in_(list(categories)))
        if created_before is not None:
            live = and_(live, data_keys.c.created_at < created_before)
        with self._engine.begin() as conn:
            shredded = sorted(set(conn.execute(select(data_keys.c.category).where(live)).scalars()))
            conn.execute(
                update(data_keys)
                .where(live)
                .values(wrapped_key=None, shredded_at=datetime.now(UTC), shred_reason=reason)
            )
        if shredded and self._engine.dialect.name == "sqlite":
            self._wipe_soon()
        return shredded

    def _wipe_soon(self) -> None:
        """Overwrite the old pages in the main file and empty the write-ahead log, so no copy
        of a shredded wrapped key survives on disk (secure_delete zeroes freed content).

        A TRUNCATE checkpoint waits until no other connection reads an older snapshot; with
        the ledger writing all the time that can take a second, so it runs in a thread of its
        own instead of holding up the erasure (the shred itself is already committed)."""
        with self._lock:
            if self._wiping is not None and not self._wiping.done():
                self._wipe_again = True
                return
            self._wiping = self._wiper.submit(self._wipe)

    def _wipe(self) -> None:
        while True:
            with self._lock:
                self._wipe_again = False
            try:
                with self._engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except SQLAlchemyError as exc:
                log.warning("keys.wipe_failed", error=type(exc).__name__)
            with self._lock:
                if not self._wipe_again:
                    return

    def wait_for_wipe(self, timeout: float = 60.0) -> None:
        """Block until the on-disk wipe after the last shred finished (tests, shutdown)."""
        with self._lock:
            wiping = self._wiping
        if wiping is not None:
            wiping.result(timeout)

    def keys_of(self, subject_ref: str) -> list[KeyRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    data_keys.c.subject_ref,
                    data_keys.c.category,
                    data_keys.c.version,
                    data_keys.c.created_at,
                    data_keys.c.shredded_at,
                    data_keys.c.shred_reason,
                )
                .where(data_keys.c.subject_ref == subject_ref)
                .order_by(data_keys.c.category, data_keys.c.version)
            ).all()
        return [KeyRecord(*row) for row in rows]

    def rotate_master_key(self, batch: int = 1_000) -> int:
        """Re-wrap every live data key (and the store's own keys) under the current master key;
        how many were re-wrapped. Safe to run while workers run, and to run again: processes
        that hold both keys (current and previous) open either wrapping meanwhile."""
        rewrapped = 0
        with self._engine.begin() as conn:
            for name, value in conn.execute(
                select(keystore_meta.c.name, keystore_meta.c.value)
            ).all():
                new = self._rewrap(value, name)
                if new is not None:
                    conn.execute(
                        update(keystore_meta).where(keystore_meta.c.name == name).values(value=new)
                    )
                    rewrapped += 1
        last: tuple[str, str, int] = ("", "", 0)
        live = data_keys.c.wrapped_key.is_not(None)
        while True:
            with self._engine.begin() as conn:
                rows = conn.execute(
                    select(
                        data_keys.c.subject_ref,
                        data_keys.c.category,
                        data_keys.c.version,
                        data_keys.c.wrapped_key,
                    )
                    .where(
                        live,
                        tuple_(data_keys.c.subject_ref, data_keys.c.category, data_keys.c.version)
                        > last,
                    )
                    .order_by(data_keys.c.subject_ref, data_keys.c.category, data_keys.c.version)
                    .limit(batch)
                ).all()
                for ref, category, version, wrapped in rows:
                    new = self._rewrap(wrapped, self._label(ref, category, version))
                    if new is None:
                        continue
                    conn.execute(
                        update(data_keys)
                        .where(
                            data_keys.c.subject_ref == ref,
                            data_keys.c.category == category,
                            data_keys.c.version == version,
                            live,
                        )
                        .values(wrapped_key=new)
                    )
                    rewrapped += 1
            if len(rows) < batch:
                return rewrapped
            last = (rows[-1][0], rows[-1][1], rows[-1][2])


def open_keystore(
    engine: Engine,
    master_key_file: Path,
    previous_master_key_file: Path | None = None,
    **kwargs: Any,
) -> SqlKeyStore:
    """The configured key store: master key from its file (created when absent), and during a
    rotation the previous one (never created)."""
    previous = (
        [load_master_key(previous_master_key_file, create=False)]
        if previous_master_key_file is not None
        else []
    )
    return SqlKeyStore(
        engine, load_master_key(master_key_file), previous_master_keys=previous, **kwargs
    )
