"""What an erasure request and a retention sweep do to a subject's state.

Pure functions over plain values, like the rules: :func:`plan_erasure` says what a request
shreds and what the law keeps, :func:`apply_erasure` and :func:`mark_erased` record it,
:func:`expired` finds what outlived its retention, and :func:`rekeyed` records a held value
re-encrypted under a new key version (after a refused collection of its category).
:func:`erasure_reach` says which data key versions a request reaches (those of values before
it in the customer's order) and :func:`end_versions` records versions destroyed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from core.instants import aware, iso
from processors.policy import LegalHold, Policy, PolicyBook
from processors.reasons import ERASURE_REASONS, SUBJECT_ERASED
from processors.state import Collection, Erased, Held, KeyVersions, SubjectState
from streams.keys import IDENTITY_CATEGORY, KeyRecord, Versions


@dataclass(frozen=True, slots=True)
class RetainedCategory:
    """A category kept despite erasure: the legal basis and the ISO date it is kept through.
    Same fields as the ``lifecycle.RetainedCategory`` Avro record."""

    category: str
    basis: str
    until: str

    def to_record(self) -> dict[str, str]:
        return {"category": self.category, "basis": self.basis, "until": self.until}


@dataclass(frozen=True, slots=True)
class ErasurePlan:
    """What an erasure request does to a subject's data.

    ``shred``: categories whose data keys are destroyed now (held ones, and ones with a live key
    but nothing held: values of refused collections). ``retained``: held categories
    the law requires kept (basis, until). ``already_erased``: requested categories erased
    earlier (a repeated request). ``not_held``: requested categories never collected.
    """

    shred: tuple[str, ...]
    retained: tuple[RetainedCategory, ...]
    already_erased: tuple[str, ...] = ()
    not_held: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """``completed`` when anything was shredded or retained, else ``nothing_held``."""
        return "completed" if self.shred or self.retained else "nothing_held"

    def retained_records(self) -> list[dict[str, str]]:
        return [item.to_record() for item in self.retained]


def plan_erasure(
    state: SubjectState,
    requested: Sequence[str] | None,
    policy: Policy,
    at: datetime,
    *,
    keyed: Iterable[str] = (),
) -> ErasurePlan:
    """What to shred and what to keep for an erasure request at ``at`` under ``policy`` (the
    version in force then). ``requested`` None means every category held or keyed.

    ``keyed`` names the categories whose data key still lives in the key store (the subject's
    own ``subject_id`` key aside). The publisher encrypts every value before the decision, so a
    refused collection leaves a ciphertext on ``customer.events`` under a live key although
    nothing of it is held: such a category is shredded too. Only held categories can be
    retained: a legal hold (``retention`` ``legal_basis`` + ``keep_for``, measured from the
    category's latest collection) that has not ended by ``at`` keeps its basis and until-date;
    one whose hold ended is shredded.
    """
    live = frozenset(keyed)
    targets = (
        tuple(sorted({*state.collected, *live}))
        if requested is None
        else tuple(dict.fromkeys(requested))
    )
    today = aware(at).date()
    shred: list[str] = []
    retained: list[RetainedCategory] = []
    already: list[str] = []
    not_held: list[str] = []
    for category in targets:
        held = state.collected.get(category)
        if held is None:
            if category in live:
                shred.append(category)  # only refused (never held) values: nothing to retain
            else:
                (already if category in state.erased else not_held).append(category)
            continue
        hold = _legal_hold(state, policy, category, held)
        if hold is not None and hold.until >= today:
            retained.append(RetainedCategory(category, hold.basis, hold.until_iso))
        else:
            shred.append(category)
    return ErasurePlan(tuple(shred), tuple(retained), tuple(already), tuple(not_held))


def apply_erasure(state: SubjectState, plan: ErasurePlan, at: datetime) -> SubjectState:
    """The state once ``plan`` is carried out: shredded categories erased ``subject_erased``
    (those never held too: their key is destroyed, so a later use is refused as erased),
    retained ones held for their legal basis until their until-date."""
    erased = mark_erased(state, plan.shred, SUBJECT_ERASED, at)
    unheld = [c for c in plan.shred if c not in state.collected and c not in erased.erased]
    if unheld:
        marks = dict(erased.erased)
        marks.update(dict.fromkeys(unheld, Erased(SUBJECT_ERASED, iso(at))))
        erased = replace(erased, erased=marks)
    if not plan.retained:
        return erased
    held = dict(erased.held)
    for item in plan.retained:
        held[item.category] = Held(item.basis, item.until)
    return replace(erased, held=held)


def mark_erased(
    state: SubjectState, categories: Iterable[str], reason_code: str, at: datetime
) -> SubjectState:
    """The state after the data keys of ``categories`` were destroyed for ``reason_code``
    (``subject_erased`` or ``retention_expired``). Categories not held are ignored."""
    if reason_code not in ERASURE_REASONS:
        raise ValueError(
            f"reason_code must be one of {sorted(ERASURE_REASONS)}, not {reason_code!r}"
        )
    categories = [category for category in categories if category in state.collected]
    if not categories:
        return state
    collected = dict(state.collected)
    erased = dict(state.erased)
    held = dict(state.held)
    erased_at = iso(at)
    for category in categories:
        del collected[category]
        held.pop(category, None)
        erased[category] = Erased(reason_code, erased_at)
    return replace(state, collected=collected, erased=erased, held=held)


def rekeyed(state: SubjectState, versions: Mapping[str, int]) -> SubjectState:
    """The state once the held values of some categories were re-encrypted under a new data
    key version (``versions``: category -> version). Categories not held are ignored."""
    collected = dict(state.collected)
    keys = dict(state.keys)
    for category, version in versions.items():
        item = collected.get(category)
        if item is not None:
            collected[category] = Collection(
                item.purposes, version, item.collected_at, item.policy_version
            )
            keys[category] = state.versions(category).allowing(version)
    return replace(state, collected=collected, keys=keys)


def end_versions(
    state: SubjectState, through: Mapping[str, int], exactly: Mapping[str, Iterable[int]]
) -> SubjectState:
    """The state once data key versions were destroyed: per category every one up to
    ``through`` and ``exactly`` these. A collection whose value names one of them is refused
    ``value_unreadable`` from then on; the category's held value, if any, is not touched
    here (:func:`mark_erased` and :func:`rekeyed` say what became of it)."""
    keys = dict(state.keys)
    for category in {*through, *exactly}:
        known = state.versions(category)
        upto = max(known.ended_through, through.get(category, 0))
        ended = {v for v in (*known.ended, *exactly.get(category, ())) if v > upto}
        allowed = tuple(v for v in known.allowed if v > upto and v not in ended)
        keys[category] = KeyVersions(upto, tuple(sorted(ended)), allowed)
    return replace(state, keys=keys)


def erasure_versions(
    state: SubjectState, category: str, named: int | None, newest: int
) -> tuple[int, tuple[int, ...]]:
    """(through, exactly): the data key versions of ``category`` an erasure request destroys.

    ``named``: the newest version the request ends (``key_versions_ended``: its publisher
    started a newer one before sending it), None when it names none (then ``newest``, the
    newest version the store has now: every one). Also every version an allowed value of
    the category was decided under before the request, even a newer one (a value published
    by another producer after the rotation but before the request in the customer's order)."""
    through = newest if named is None else named
    allowed = {v for v in state.versions(category).allowed if v > through}
    collection = state.collected.get(category)
    if collection is not None and collection.key_version > through:
        allowed.add(collection.key_version)
    return through, tuple(sorted(allowed))


def key_versions(records: Iterable[KeyRecord]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """(category -> the newest version the store has, category -> its live versions)."""
    newest: dict[str, int] = {}
    live: dict[str, list[int]] = {}
    for record in records:
        newest[record.category] = max(newest.get(record.category, 0), record.version)
        if record.shredded_at is None:
            live.setdefault(record.category, []).append(record.version)
    return newest, live


@dataclass(frozen=True, slots=True)
class ErasureReach:
    """What an erasure request can destroy of one subject's keys: per category (``subject_id``
    included) the versions it reaches, and the categories with a live version among them
    (those it shreds although nothing of them is held)."""

    versions: Mapping[str, Versions]
    keyed: tuple[str, ...]


def erasure_reach(
    state: SubjectState, named: Mapping[str, int], records: Iterable[KeyRecord]
) -> ErasureReach:
    """The reach of a request naming ``named`` (``key_versions_ended``) over the key store's
    ``records`` of the subject: per category :func:`erasure_versions`; for ``subject_id`` the
    versions up to the one named (every one when none is)."""
    newest, live = key_versions(records)
    versions: dict[str, Versions] = {}
    for category in {*live, *state.collected, *state.keys} - {IDENTITY_CATEGORY}:
        through, exactly = erasure_versions(
            state, category, named.get(category), newest.get(category, 0)
        )
        versions[category] = Versions(through, frozenset(exactly))
    versions[IDENTITY_CATEGORY] = Versions(
        named.get(IDENTITY_CATEGORY, newest.get(IDENTITY_CATEGORY, 0))
    )
    keyed = tuple(
        sorted(
            category
            for category, live_versions in live.items()
            if category != IDENTITY_CATEGORY
            and any(version in versions[category] for version in live_versions)
        )
    )
    return ErasureReach(versions, keyed)


def expired(state: SubjectState, book: PolicyBook, as_of: datetime) -> list[str]:
    """Held categories whose retention ran out by ``as_of`` (sorted), judged by the policy
    version in force at ``as_of``: its ``period`` from the latest collection (extended by a
    longer legal ``keep_for``); or, for a category kept after an erasure request, its
    until-date has passed."""
    as_of = aware(as_of)
    policy = book.in_force(as_of)
    today = as_of.date()
    out: list[str] = []
    for category, collection in state.collected.items():
        held = state.held.get(category)
        if held is not None:
            if date.fromisoformat(held.until) < today:
                out.append(category)
            continue
        retention = policy.retentions.get(category)
        if retention is None:
            continue
        ends = retention.expires_at(collection.collected_instant)
        if ends is not None and ends <= as_of:
            out.append(category)
    return sorted(out)


def _legal_hold(
    state: SubjectState, policy: Policy, category: str, collection: Collection
) -> LegalHold | None:
    held = state.held.get(category)
    if held is not None:
        return LegalHold(held.basis, date.fromisoformat(held.until))
    return policy.legal_hold(category, collection.collected_instant)
