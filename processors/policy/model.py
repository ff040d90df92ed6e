"""One version of the policy as values: the categories, channels, purposes, roles, recipients,
prohibitions and retention rules it states, each citing the sentence it comes from.

Mappings are read-only and names are the policy's identifiers; lookups are dictionary and
frozenset membership tests, because the decision engine consults the policy for every event.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

Basis = Literal["necessary", "consent"]


BASES: frozenset[str] = frozenset({"necessary", "consent"})


ALL = "all"
"""Written instead of a list: every category (or, for ``compatible_with``, every purpose)."""


_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?$")


@dataclass(frozen=True, slots=True)
class Citation:
    """Where a rule comes from: a section of the published policy and a short quote of it.

    A rule resting on several sentences (a purpose named in INFORMATION USE whose consent basis
    is in INTRODUCTION, say) lists them all under ``cites:``; the first is the rule's citation
    (the one decisions name) and the others are in ``also``.
    """

    section: str
    quote: str
    also: tuple[Citation, ...] = ()

    def every(self) -> tuple[Citation, ...]:
        """This citation and the further ones, each without further ones."""
        return (Citation(self.section, self.quote), *self.also)

    def __str__(self) -> str:
        return f'{self.section}: "{self.quote}"'


@dataclass(frozen=True, slots=True)
class Duration:
    """A calendar period written in ISO 8601 (``P90D``, ``P6Y``, ``P1Y6M``).

    Years and months are calendar units, so six years after 2026-02-02 is 2032-02-02 (a 29
    February start ends on 28 February when the end year has none).
    """

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.match(text)
        if match is None or text == "P":
            raise ValueError(f"{text!r} is not an ISO 8601 period such as P90D, P6Y or P1Y6M")
        years, months, days = (int(group or 0) for group in match.groups())
        return cls(years, months, days)

    def after(self, start: datetime) -> datetime:
        """The instant this period after ``start``."""
        month_index = start.month - 1 + self.months + 12 * self.years
        year = start.year + month_index // 12
        month = month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    def __str__(self) -> str:
        parts = ((self.years, "Y"), (self.months, "M"), (self.days, "D"))
        return "P" + ("".join(f"{n}{unit}" for n, unit in parts if n) or "0D")


@dataclass(frozen=True, slots=True)
class Category:
    """A category of personal data the policy says may be collected."""

    name: str
    description: str
    cites: Citation


@dataclass(frozen=True, slots=True)
class Channel:
    """A way data reaches the Commission (a form, in person, the website ...)."""

    name: str
    description: str
    cites: Citation


@dataclass(frozen=True, slots=True)
class Purpose:
    """A permitted purpose: its basis, the categories it may use, and the collection purposes it
    is compatible with (data collected for one of those may be used for this one too)."""

    name: str
    basis: Basis
    categories: frozenset[str]
    compatible_with: frozenset[str]
    compatible_with_all: bool
    granted_by_default: bool
    cites: Citation

    @property
    def consent_based(self) -> bool:
        return self.basis == "consent"

    def permits_data_collected_for(self, collected_for: Iterable[str]) -> str | None:
        """The collection purpose that lets data collected for ``collected_for`` serve this one,
        or None. Prefers this purpose itself, then the first compatible one."""
        purposes = tuple(collected_for)
        if self.name in purposes:
            return self.name
        for declared in purposes:
            if self.compatible_with_all or declared in self.compatible_with:
                return declared
        return None


@dataclass(frozen=True, slots=True)
class ProhibitedPurpose:
    """A purpose that is refused for everyone (sale, trade ...)."""

    name: str
    cites: Citation


@dataclass(frozen=True, slots=True)
class Role:
    """An employee or system role and the categories its job function needs."""

    name: str
    categories: frozenset[str]
    cites: Citation


@dataclass(frozen=True, slots=True)
class Agreement:
    """The confidentiality agreement (or legal ground) under which a recipient receives data."""

    name: str
    reference: str


@dataclass(frozen=True, slots=True)
class Recipient:
    """A trusted outside party: what it may receive, for which purposes, under which agreement."""

    name: str
    agreement: Agreement
    categories: frozenset[str]
    purposes: frozenset[str]
    cites: Citation


@dataclass(frozen=True, slots=True)
class ProhibitedCollection:
    """A category that must never be collected through a channel."""

    index: int
    channel: str
    category: str
    cites: Citation


@dataclass(frozen=True, slots=True)
class LegalHold:
    """Why and until when the law requires a category to be kept, even against erasure."""

    basis: str
    until: date

    @property
    def until_iso(self) -> str:
        return self.until.isoformat()


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a category is kept.

    ``period`` counts from the (latest) collection; None means "as long as the purposes it was
    collected for last", which ends only with an erasure request. ``keep_for`` is the time the
    law requires it kept (``legal_basis`` says which law); an erasure request does not shorten it.
    """

    category: str
    period: Duration | None
    legal_basis: str | None
    keep_for: Duration | None
    cites: Citation

    def expires_at(self, collected_at: datetime) -> datetime | None:
        """When data collected at ``collected_at`` has outlived its retention (None: never by
        itself). The legal period, when longer, extends it."""
        if self.period is None:
            return None
        end = self.period.after(collected_at)
        if self.keep_for is not None:
            end = max(end, self.keep_for.after(collected_at))
        return end

    def legal_hold(self, collected_at: datetime) -> LegalHold | None:
        """The hold the law puts on data collected at ``collected_at``: kept through ``until``."""
        if self.keep_for is None or self.legal_basis is None:
            return None
        return LegalHold(self.legal_basis, self.keep_for.after(collected_at).date())


@dataclass(frozen=True, slots=True)
class Provision:
    """Where in a law a rule of the request clock comes from (``law``, and the article or
    section, ``provision``)."""

    law: str
    provision: str

    def __str__(self) -> str:
        return f"{self.law}, {self.provision}"


@dataclass(frozen=True, slots=True)
class Extension:
    """Whether, how often and by how much the answer to a request may be extended: at most
    ``times`` extensions of ``by`` each, recorded (and the customer told) within
    ``notice_within`` of receipt, for one of ``reasons`` (name -> what it means)."""

    times: int
    by: Duration
    notice_within: Duration
    condition: str
    reasons: Mapping[str, str]
    cites: Provision

    def notice_deadline(self, received: datetime) -> datetime:
        """The instant by which an extension must be recorded."""
        return self.notice_within.after(received)


@dataclass(frozen=True, slots=True)
class RefusalGround:
    """A ground on which the law lets the Commission refuse a customer's request."""

    name: str
    description: str
    cites: Provision


@dataclass(frozen=True, slots=True)
class RequestClock:
    """How long the Commission has to answer a customer's access or erasure request (RETENTION
    OF DATA: customers may ask to see, correct or delete their data), under which law.

    ``placeholder`` marks periods the privacy officer has not yet confirmed (the published
    text names the law but no period). ``extension`` is None where the law allows none.
    """

    law: str
    cites: Citation
    placeholder: bool
    answer_within: Duration
    answer_cites: Provision
    extension: Extension | None
    refusals: Mapping[str, RefusalGround]

    def due(self, received: datetime, extensions: int = 0) -> datetime:
        """When the answer to a request received at ``received`` is due, after ``extensions``
        recorded extensions (each adds the extension period to the due date)."""
        due = self.answer_within.after(received)
        if self.extension is not None:
            for _ in range(min(extensions, self.extension.times)):
                due = self.extension.by.after(due)
        return due


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """One version of the policy. Mappings are read-only; names are the policy's identifiers."""

    version: str
    effective_from: datetime
    effective_from_cites: Citation
    title: str
    source: str
    notes: str
    file: Path
    sections: tuple[str, ...]
    categories: Mapping[str, Category]
    channels: Mapping[str, Channel]
    purposes: Mapping[str, Purpose]
    prohibited_purposes: Mapping[str, ProhibitedPurpose]
    roles: Mapping[str, Role]
    recipients: Mapping[str, Recipient]
    prohibited_collections: Mapping[tuple[str, str], ProhibitedCollection]
    retentions: Mapping[str, Retention]
    request_clock: RequestClock | None = None
    """The clock on customers' requests; None in a version that states none."""
    reason_codes: Mapping[str, Citation] = field(default_factory=dict)
    """Reason codes the pipeline added to the contract's, each with the sentence of the
    policy it rests on (``reason_codes:`` in the file, optional)."""

    def retention(self, category: str) -> Retention:
        """The retention rule of ``category`` (KeyError naming it when the policy has none)."""
        try:
            return self.retentions[category]
        except KeyError:
            raise KeyError(f"policy {self.version} has no category {category!r}") from None

    def legal_hold(self, category: str, collected_at: datetime) -> LegalHold | None:
        """The legal hold on ``category`` collected at ``collected_at`` (None: none, or the
        category is unknown to this version)."""
        rule = self.retentions.get(category)
        return None if rule is None else rule.legal_hold(collected_at)

    def __repr__(self) -> str:
        return f"Policy(version={self.version!r}, effective_from={self.effective_from.isoformat()})"


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Every name any version of the policy knows; what the publisher validates input against.

    ``purposes`` holds the permitted and the known-prohibited purposes: a prohibited purpose is a
    valid name (the event is published, then denied ``purpose_not_permitted``).
    """

    categories: frozenset[str]
    purposes: frozenset[str]
    permitted_purposes: frozenset[str]
    prohibited_purposes: frozenset[str]
    roles: frozenset[str]
    channels: frozenset[str]
    recipients: frozenset[str]
    prohibited_collections: frozenset[tuple[str, str]]
