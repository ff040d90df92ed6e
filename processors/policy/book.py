"""Every version of the policy, and which one was in force at an instant: the version with the
latest ``effective_from`` not after it, and the earliest version for instants before them all."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from processors.policy.model import Policy, Vocabulary


class PolicyBook:
    """Every version of the policy, ordered by ``effective_from``."""

    __slots__ = ("_by_version", "_policies", "_starts", "_vocabulary")

    def __init__(self, policies: Iterable[Policy]) -> None:
        ordered = sorted(policies, key=lambda policy: policy.effective_from)
        if not ordered:
            raise ValueError("a PolicyBook needs at least one policy version")
        self._policies = tuple(ordered)
        self._starts = [policy.effective_from for policy in ordered]
        self._by_version = {policy.version: policy for policy in ordered}
        self._vocabulary = _vocabulary(ordered)

    @property
    def versions(self) -> tuple[str, ...]:
        """Version names, oldest first."""
        return tuple(policy.version for policy in self._policies)

    @property
    def policies(self) -> tuple[Policy, ...]:
        return self._policies

    @property
    def latest(self) -> Policy:
        return self._policies[-1]

    def get(self, version: str) -> Policy:
        return self._by_version[version]

    def in_force(self, at: datetime) -> Policy:
        """The version in force at ``at`` (naive means UTC). Before the first version took
        effect, the first version judges: there is no earlier policy to apply."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        index = bisect.bisect_right(self._starts, at) - 1
        return self._policies[index if index >= 0 else 0]

    def vocabulary(self) -> Vocabulary:
        return self._vocabulary

    def __iter__(self) -> Iterator[Policy]:
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)


def _vocabulary(policies: Iterable[Policy]) -> Vocabulary:
    versions = tuple(policies)

    def every(names: Callable[[Policy], Iterable[Any]]) -> frozenset[Any]:
        return frozenset(name for policy in versions for name in names(policy))

    permitted = every(lambda policy: policy.purposes)
    prohibited = every(lambda policy: policy.prohibited_purposes)
    return Vocabulary(
        categories=every(lambda policy: policy.categories),
        purposes=permitted | prohibited,
        permitted_purposes=permitted,
        prohibited_purposes=prohibited,
        roles=every(lambda policy: policy.roles),
        channels=every(lambda policy: policy.channels),
        recipients=every(lambda policy: policy.recipients),
        prohibited_collections=every(lambda policy: policy.prohibited_collections),
    )
