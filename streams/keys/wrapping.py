"""What every key store shares: data keys wrapped under the master key (AES-GCM), the keyed
pseudonym ``subject_ref``, a key-check value that detects a wrong master key at open, and the
bounded cache of unwrapped keys (:mod:`streams.keys.cache`). Subclasses only store wrapped keys."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.exc import SQLAlchemyError

from streams.exceptions import KeyShreddedError, KeyStoreError, WrongMasterKeyError
from streams.keys.base import KEY_LEN, DataKey, KeyRecord, Shredding, VersionRef, Versions
from streams.keys.cache import KeyCache

_KEK_CHECK_PLAINTEXT = b"lifecycle key-check value v1"


_NONCE_LEN = 12


DEFAULT_CACHE_SIZE = 1_000_000
"""Customers whose unwrapped keys a process keeps (about 300 bytes each with three
categories: see :mod:`streams.keys.cache`)."""


WARM_CHUNK = 20_000
_RACES = 20
"""Attempts at reserving version numbers that other processes keep taking first."""


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
        # keyed once: each pseudonym is a copy fed the subject_id (cheaper than a one-shot
        # HMAC, which keys a new context every time)
        self._pseudonym = hmac.new(self._pseudonym_key, digestmod=hashlib.sha256)

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
    def _destroy(self, shredding: Shredding) -> list[str]: ...

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

    def rewrap(self, wrapped: bytes, label: str) -> bytes | None:
        """``wrapped`` under the current master key; None when it already is."""
        try:
            self._kek.decrypt(wrapped[:_NONCE_LEN], wrapped[_NONCE_LEN:], label.encode())
            return None
        except InvalidTag:
            return self._wrap(self._unwrap(wrapped, label), label)

    def wrap_secret(self, label: str, secret: bytes) -> bytes:
        """``secret`` wrapped under the master key, bound to ``label``: for secrets kept beside
        the data keys in ``keystore_meta`` under that label (source secrets), which
        :func:`~streams.keys.rotation.rotate_master_key` re-wraps with the store's own keys."""
        return self._wrap(secret, label)

    def unwrap_secret(self, label: str, wrapped: bytes) -> bytes:
        """What :meth:`wrap_secret` wrapped; WrongMasterKeyError when no known key opens it."""
        return self._unwrap(wrapped, label)

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
            "pseudonym_key", self._wrap(os.urandom(KEY_LEN), "pseudonym_key")
        )
        return self._unwrap(wrapped, "pseudonym_key")

    @staticmethod
    def key_label(subject_ref: str, category: str, version: int) -> str:
        return f"{subject_ref}/{category}/{version}"

    # -- public API ----------------------------------------------------------------------

    def subject_ref(self, subject_id: str) -> str:
        keyed = self._pseudonym.copy()
        keyed.update(subject_id.encode())
        return keyed.hexdigest()

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
                            self._wrap(AESGCM.generate_key(256), self.key_label(*pair, version)),
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
                    self._unwrap(wrapped, self.key_label(*pair, version)),
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
                    rows.append(
                        (*pair, version, self._wrap(secret, self.key_label(*pair, version)))
                    )
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
        label = self.key_label(subject_ref, category, version)
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
                secret = self._unwrap(wrapped, self.key_label(*ref))
            out[ref] = DataKey(ref[0], ref[1], ref[2], secret)
        return out

    def made_versions(self, versions: Iterable[VersionRef]) -> set[VersionRef]:
        wanted = list(dict.fromkeys(versions))
        if not wanted:
            return set()
        try:
            return set(self._load_versions(wanted))
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store unavailable: {type(exc).__name__}") from exc

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
        wanted = None if categories is None else tuple(categories)
        self.forget(subject_ref, wanted)
        try:
            shredded = self._destroy(Shredding(subject_ref, wanted, reason, created_before))
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
                    (ref, cat, version, self._unwrap(wrapped, self.key_label(ref, cat, version)))
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


def live_chunks(
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
