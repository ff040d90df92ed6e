"""What the pipeline knows about one subject, and the form it is kept in (a Faust table entry).

No personal data: category and purpose names, key generations, instants and policy versions
only. Values are immutable; the rules (:mod:`processors.rules`) and the erasure steps
(:mod:`processors.erasure`) return new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from core.instants import parse_instant
from processors.exceptions import StateError
from processors.reasons import ERASURE_REASONS

STATE_FORMAT = 1
"""Written as ``"format"`` by :meth:`SubjectState.to_dict`; bumped when the shape changes."""


@dataclass(frozen=True, slots=True)
class Collection:
    """What was collected of one category (never the value): the purposes declared for it,
    the data key generation its value is encrypted under, when, and under which policy."""

    purposes: tuple[str, ...]
    key_version: int
    collected_at: str
    policy_version: str

    @property
    def collected_instant(self) -> datetime:
        return parse_instant(self.collected_at)


@dataclass(frozen=True, slots=True)
class Erased:
    """A category whose data key was destroyed: why (``subject_erased``, ``retention_expired``)
    and when."""

    reason_code: str
    erased_at: str


@dataclass(frozen=True, slots=True)
class Held:
    """A category kept after an erasure request because the law requires it, until ``until``
    (ISO date, inclusive); a retention sweep shreds it after that."""

    basis: str
    until: str


@dataclass(frozen=True, slots=True)
class KeyVersions:
    """What the decisions know of one category's data key versions (numbers only).

    ``ended_through`` and ``ended``: versions whose values can no longer be read, every one up
    to ``ended_through`` (an erasure, a retention sweep) and ``ended`` above it (a refused
    collection's own versions). ``allowed``: versions, not ended, under which values of
    allowed collections were encrypted (or a held value re-encrypted); an erasure request
    destroys them too, whatever versions it names, since those values came before it."""

    ended_through: int = 0
    ended: tuple[int, ...] = ()
    allowed: tuple[int, ...] = ()

    def is_ended(self, version: int) -> bool:
        return version <= self.ended_through or version in self.ended

    def allowing(self, version: int) -> KeyVersions:
        """These versions with ``version`` that of an allowed value too."""
        if version in self.allowed:
            return self
        return replace(self, allowed=tuple(sorted((*self.allowed, version))))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ended_through:
            out["through"] = self.ended_through
        if self.ended:
            out["ended"] = list(self.ended)
        if self.allowed:
            out["allowed"] = list(self.allowed)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyVersions:
        return cls(
            int(data.get("through", 0)),
            tuple(sorted(int(v) for v in data.get("ended", ()))),
            tuple(sorted(int(v) for v in data.get("allowed", ()))),
        )


_NO_VERSIONS = KeyVersions()


def _held_only(collection: Collection | None) -> KeyVersions:
    """What the state knows of versions when a held value's is the only one."""
    if collection is None:
        return _NO_VERSIONS
    return KeyVersions(allowed=(collection.key_version,))


@dataclass(frozen=True, slots=True)
class SubjectState:
    """What the pipeline knows about one subject, keyed by ``subject_ref``. No personal data:
    category and purpose names, key generations, instants and policy versions only.

    ``collected`` and ``erased`` never share a category; ``held`` names collected categories
    kept after an erasure request. ``consent`` holds the customer's explicit choices (a purpose
    absent from it has the policy's default). Values are immutable; functions return new ones.
    """

    collected: Mapping[str, Collection] = field(default_factory=dict)
    consent: Mapping[str, bool] = field(default_factory=dict)
    erased: Mapping[str, Erased] = field(default_factory=dict)
    held: Mapping[str, Held] = field(default_factory=dict)
    keys: Mapping[str, KeyVersions] = field(default_factory=dict)
    """Per category, the data key versions ended and those of allowed values."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for a Faust table); :meth:`from_dict` reads it back."""
        return {
            "format": STATE_FORMAT,
            "collected": {
                category: {
                    "purposes": list(item.purposes),
                    "key_version": item.key_version,
                    "collected_at": item.collected_at,
                    "policy_version": item.policy_version,
                }
                for category, item in self.collected.items()
            },
            "consent": dict(self.consent),
            "erased": {
                category: {"reason_code": item.reason_code, "erased_at": item.erased_at}
                for category, item in self.erased.items()
            },
            "held": {
                category: {"basis": item.basis, "until": item.until}
                for category, item in self.held.items()
            },
            "keys": {  # the common case, the held value's version alone, is left implied
                category: item.to_dict()
                for category, item in self.keys.items()
                if item != _held_only(self.collected.get(category))
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SubjectState:
        """The state :meth:`to_dict` wrote; None (a subject never seen) is the empty state."""
        if data is None:
            return cls()
        try:
            if data.get("format", STATE_FORMAT) != STATE_FORMAT:
                raise StateError(f"unknown subject state format {data.get('format')!r}")
            collected = {
                str(category): Collection(
                    tuple(str(purpose) for purpose in item["purposes"]),
                    int(item["key_version"]),
                    str(item["collected_at"]),
                    str(item["policy_version"]),
                )
                for category, item in data.get("collected", {}).items()
            }
            consent = {str(purpose): bool(v) for purpose, v in data.get("consent", {}).items()}
            erased = {
                str(category): Erased(str(item["reason_code"]), str(item["erased_at"]))
                for category, item in data.get("erased", {}).items()
            }
            held = {
                str(category): Held(str(item["basis"]), str(item["until"]))
                for category, item in data.get("held", {}).items()
            }
            keys = {  # absent: only the held value's version (or states written before)
                category: _held_only(collection) for category, collection in collected.items()
            }
            keys.update(
                {
                    str(category): KeyVersions.from_dict(item)
                    for category, item in data.get("keys", {}).items()
                }
            )
        except StateError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"malformed subject state: {type(exc).__name__}: {exc}") from exc
        for category, erasure in erased.items():
            if erasure.reason_code not in ERASURE_REASONS:
                raise StateError(f"erased.{category}: unknown reason {erasure.reason_code!r}")
        return cls(collected, consent, erased, held, keys)

    def versions(self, category: str) -> KeyVersions:
        return self.keys.get(category) or _NO_VERSIONS

    def consent_given(self, purpose: str, default: bool = True) -> bool:
        return self.consent.get(purpose, default)
