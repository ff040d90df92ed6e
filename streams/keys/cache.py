"""The cache of unwrapped data keys, packed so that every key of a large customer base fits.

One entry per customer (``subject_ref``): a ``bytes`` value holding, per category, a one-byte
category code, the key's version (4 bytes) and its 32 secret bytes: a few hundred bytes a
customer, where an object per key would take several times that (``make bench`` measures the
cache's memory). Dropping a customer's keys (a shred, a revocation heard from another
process) is one dictionary operation.

Only each category's current version is kept here; an older version asked for by a decryption
goes to a small side cache. When :attr:`KeyCache.max_subjects` customers are cached, the
tenth cached first is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from cachetools import LRUCache

_ENTRY = 37  # category code (1) + version (4) + key (32)
_OLD_VERSIONS = 10_000


class KeyCache:
    """``(subject_ref, category) -> (version, secret)`` for current keys, packed per customer."""

    __slots__ = ("_codes", "_names", "_old", "_subjects", "max_subjects")

    def __init__(self, max_subjects: int) -> None:
        if max_subjects < 1:
            raise ValueError("the key cache must hold at least one customer")
        self.max_subjects = max_subjects
        self._subjects: dict[str, bytes] = {}
        self._codes: dict[str, int] = {}
        self._names: list[str] = []
        self._old: LRUCache[tuple[str, str, int], bytes] = LRUCache(
            min(_OLD_VERSIONS, max_subjects)
        )

    def __len__(self) -> int:
        """How many keys are cached."""
        return sum(len(packed) for packed in self._subjects.values()) // _ENTRY + len(self._old)

    def __contains__(self, subject_ref: object) -> bool:
        return subject_ref in self._subjects

    @property
    def subjects(self) -> int:
        return len(self._subjects)

    def _code(self, category: str) -> int:
        code = self._codes.get(category)
        if code is None:
            if len(self._names) == 256:
                raise ValueError("more than 256 categories")
            code = self._codes[category] = len(self._names)
            self._names.append(category)
        return code

    def current(self, subject_ref: str, category: str) -> tuple[int, bytes] | None:
        """The cached current key of a pair: (version, secret), or None."""
        packed = self._subjects.get(subject_ref)
        code = self._codes.get(category)
        if packed is None or code is None:
            return None
        for at in range(0, len(packed), _ENTRY):
            if packed[at] == code:
                return int.from_bytes(packed[at + 1 : at + 5]), packed[at + 5 : at + _ENTRY]
        return None

    def get(self, subject_ref: str, category: str, version: int) -> bytes | None:
        """The cached secret of one key version, or None."""
        found = self.current(subject_ref, category)
        if found is not None and found[0] == version:
            return found[1]
        return self._old.get((subject_ref, category, version))

    def put_current(self, subject_ref: str, category: str, version: int, secret: bytes) -> None:
        """Remember the current key of a pair (replacing an older current one)."""
        code = self._code(category)
        entry = bytes((code,)) + version.to_bytes(4) + secret
        packed = self._subjects.get(subject_ref)
        if packed is None:
            if len(self._subjects) >= self.max_subjects:
                self._evict()
            self._subjects[subject_ref] = entry
            return
        self._subjects[subject_ref] = _without(packed, {code}) + entry

    def put(self, subject_ref: str, category: str, version: int, secret: bytes) -> None:
        """Remember a key version read for a decryption (the current one or an older one)."""
        found = self.current(subject_ref, category)
        if found is not None and found[0] == version:
            return
        self._old[(subject_ref, category, version)] = secret

    def forget(self, subject_ref: str, categories: Iterable[str] | None = None) -> None:
        """Drop a customer's cached keys (of ``categories`` only, when given)."""
        wanted = None if categories is None else set(categories)
        packed = self._subjects.pop(subject_ref, None)
        if packed is not None and wanted is not None:
            kept = _without(packed, {self._codes[c] for c in wanted if c in self._codes})
            if kept:
                self._subjects[subject_ref] = kept
        for key in [k for k in self._old if k[0] == subject_ref]:
            if wanted is None or key[1] in wanted:
                del self._old[key]

    def _evict(self) -> None:
        drop = max(1, self.max_subjects // 10)
        for subject_ref in list(islice(self._subjects, drop)):
            del self._subjects[subject_ref]


def _without(packed: bytes, codes: set[int]) -> bytes:
    """A customer's packed entries without those of the category ``codes``."""
    return b"".join(
        packed[at : at + _ENTRY] for at in range(0, len(packed), _ENTRY) if packed[at] not in codes
    )
