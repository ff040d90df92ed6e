"""The events and decisions the benchmarks feed the pipeline: :class:`lifecycle.traffic.Traffic`
(billing and outage traffic, three personal fields at collection, Zipf-skewed subjects), as
JSON lines for the publisher and as the decisions the policy engine gives them for the ledger.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from datetime import UTC, datetime
from typing import Any

import orjson

from lifecycle.traffic import Traffic
from processors.decisions import decision_record
from processors.explain import decoded_event, step
from processors.policy import PolicyBook
from processors.state import SubjectState
from streams.events import validate

SKEW = 1.1
"""Popularity skew of subjects, as in :class:`~lifecycle.traffic.Traffic`."""


def traffic_lines(count: int, subjects: int, *, seed: int = 7) -> list[bytes]:
    """``count`` input events as JSON lines (what ``lifecycle publish`` reads)."""
    return [orjson.dumps(event) for event in Traffic(subjects, seed=seed).events(count)]


def pseudonym(subject_id: str) -> str:
    """A stand-in ``subject_ref`` (64 hex digits, like the key store's HMAC) for workloads that
    never meet a key store."""
    return hashlib.sha256(subject_id.encode()).hexdigest()


def decisions(
    count: int, subjects: int, book: PolicyBook, *, seed: int = 7
) -> list[dict[str, Any]]:
    """The ``lifecycle.Decision`` values the worker would emit for ``count`` traffic events
    (judged in each subject's order, state carried per subject, as the decision stage does)."""
    states: dict[str, SubjectState] = {}
    now = datetime.now(UTC)
    vocabulary = book.vocabulary()
    out = []
    for offset, raw in enumerate(Traffic(subjects, seed=seed).events(count)):
        event = decoded_event(validate(raw, vocabulary, now=now))
        event["subject_ref"] = ref = pseudonym(raw["subject_id"])
        verdict, states[ref] = step(event, states.get(ref, SubjectState()), book)
        out.append(
            decision_record(event, verdict, partition=offset % 4, offset=offset, decided_at=now)
        )
    return out


class Zipf:
    """Subject indexes drawn with the traffic's skewed popularity (index 0 the most popular)."""

    def __init__(self, subjects: int, *, skew: float = SKEW, seed: int = 11) -> None:
        self._rng = random.Random(seed)
        total, cumulative = 0.0, []
        for rank in range(1, subjects + 1):
            total += 1.0 / rank**skew
            cumulative.append(total)
        self._cumulative = cumulative

    def draw(self) -> int:
        return bisect.bisect_left(self._cumulative, self._rng.random() * self._cumulative[-1])
