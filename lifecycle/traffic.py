"""Synthetic billing and outage traffic in the input format: for the demo and the benchmarks.

Values are invented (no real person), look like real ones (three personal fields of realistic
size per collection), and subjects follow a skewed (Zipf-like) popularity: a few customers
generate much of the traffic, as with real accounts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.kinds import COLLECTED, DELETION_REQUESTED, USED

_FIRST = (
    "Aaliyah",
    "Brandon",
    "Chantal",
    "Dexter",
    "Esther",
    "Fabian",
    "Giselle",
    "Hassan",
    "Imani",
    "Jerome",
    "Keisha",
    "Leon",
    "Marisa",
    "Nigel",
    "Odette",
    "Pravin",
)
_LAST = (
    "Ramdeen",
    "Charles",
    "Mohammed",
    "Baptiste",
    "Singh",
    "Joseph",
    "Alexander",
    "Persad",
    "Williams",
    "Ali",
    "Gopaul",
    "Thomas",
)
_STREETS = (
    "Frederick Street",
    "Eastern Main Road",
    "Southern Main Road",
    "Ariapita Avenue",
    "Lady Young Road",
    "Coffee Street",
)
_TOWNS = ("Port of Spain", "San Fernando", "Chaguanas", "Arima", "Point Fortin", "Scarborough")


class Traffic:
    """A reproducible stream of input events (dicts of the contract's JSON-lines format)."""

    def __init__(
        self,
        subjects: int = 10_000,
        *,
        seed: int = 7,
        skew: float = 1.1,
        start: datetime | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        self._subjects = subjects
        weights = [1.0 / (rank**skew) for rank in range(1, subjects + 1)]
        self._cumulative: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            self._cumulative.append(total)
        self._collected: set[int] = set()
        self._clock = start or datetime.now(UTC)
        self._seq = 0

    def subject_id(self, index: int) -> str:
        return f"C-{100000 + index}"

    def _pick(self) -> int:
        import bisect

        return bisect.bisect_left(self._cumulative, self._rng.random() * self._cumulative[-1])

    def _common(self, kind: str, index: int, source: str, role: str, actor: str) -> dict[str, Any]:
        self._seq += 1
        self._clock += timedelta(milliseconds=self._rng.randint(1, 50))
        return {
            "kind": kind,
            "event_id": f"ev-{self._seq:09d}",
            "occurred_at": self._clock.isoformat(),
            "source": source,
            "subject_id": self.subject_id(index),
            "actor": {"id": actor, "role": role},
        }

    def collected(self, index: int) -> dict[str, Any]:
        rng = self._rng
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        event = self._common(COLLECTED, index, "web", "system", "web-portal")
        event.update(
            channel=rng.choice(("web_form", "paper_form", "telephone")),
            purposes=["service_provision", "billing", "account_notices"],
            data={
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}{index}@example.org",
                "address": f"{rng.randint(1, 250)} {rng.choice(_STREETS)}, {rng.choice(_TOWNS)}",
            },
        )
        self._collected.add(index)
        return event

    def billing_use(self, index: int) -> dict[str, Any]:
        event = self._common(USED, index, "billing", "billing_clerk", "clerk-7")
        event.update(categories=["name", "address"], purpose="billing")
        return event

    def outage_use(self, index: int) -> dict[str, Any]:
        event = self._common(USED, index, "outage", "field_technician", "crew-12")
        event.update(categories=["address"], purpose="service_provision")
        return event

    def notice(self, index: int) -> dict[str, Any]:
        event = self._common(USED, index, "crm", "customer_service", "agent-3")
        event.update(categories=["email"], purpose="account_notices")
        return event

    def events(self, count: int) -> Iterator[dict[str, Any]]:
        """``count`` events: each subject's first event collects its data, then uses follow."""
        for _ in range(count):
            index = self._pick()
            if index not in self._collected:
                yield self.collected(index)
                continue
            roll = self._rng.random()
            if roll < 0.5:
                yield self.billing_use(index)
            elif roll < 0.8:
                yield self.outage_use(index)
            else:
                yield self.notice(index)

    def violations(self, index: int) -> list[dict[str, Any]]:
        """A few refusals the demo shows: a sale, a marketing look at banking data."""
        sale = self._common(USED, index, "crm", "marketing", "mk-1")
        sale.update(categories=["email"], purpose="sale")
        peek = self._common(USED, index, "crm", "marketing", "mk-1")
        peek.update(categories=["banking"], purpose="billing")
        return [sale, peek]

    def erasure(self, index: int, request_id: str) -> dict[str, Any]:
        event = self._common(DELETION_REQUESTED, index, "crm", "privacy_officer", "po-1")
        event["request_id"] = request_id
        return event
