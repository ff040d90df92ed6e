"""The decision engine: one verdict per event, from the policy in force and the subject's state.

Pure functions over plain values (no Kafka, no clock, no keys): :func:`decide` judges a decoded
``lifecycle.CustomerEvent`` against the :class:`~processors.policy.Policy` in force at its
``occurred_at`` and the subject's :class:`SubjectState`; :func:`apply` folds an allowed event
into the state; :func:`plan_erasure`, :func:`apply_erasure`, :func:`mark_erased` and
:func:`expired` are what erasure requests and retention sweeps need; :func:`rekeyed` records a
held value re-encrypted under a new key version (after a refused collection of its category);
:func:`end_versions` and :func:`erasure_versions` keep track of which data key versions are
ended, and :func:`refuse_unreadable` refuses a collection whose value cannot be read.
:class:`RefusalScreen` lets the publisher tell a collection the policy refuses before it is
sent (a collection's verdict depends on no state).

Check order (the first failing check decides; within a check, categories in event order):

``used`` / ``shared``
  1. purpose prohibited (sale, trade ...) or unknown, or not allowed to use a (known) category
     -> ``purpose_not_permitted``
  2. actor role unknown, or may not touch a category (a category the policy does not know is
     touched by no role) -> ``role_not_authorized``
  3. ``shared`` only: recipient unknown, or the category or purpose is outside its agreement
     -> ``recipient_not_trusted``
  4. category erased -> ``subject_erased`` (by request) or ``retention_expired`` (by a sweep)
  5. category never collected for this subject -> ``not_collected``
  6. purpose neither declared at collection nor compatible with a declared one
     -> ``purpose_not_declared``
  7. consent-based purpose the customer withdrew -> ``consent_withdrawn``
  8. otherwise ``allowed``

``collected``
  1. a (channel, category) the policy prohibits (card data via online tendering) -> the whole
     event ``prohibited_collection``; an unknown channel or category likewise
  2. no purpose, or a purpose prohibited or unknown, or a category that none of the declared
     purposes may use -> ``purpose_not_permitted``
  3. actor role unknown, or may not touch a category -> ``role_not_authorized``
  4. otherwise ``allowed``; then, in the decision stage, a value that cannot be read (its key
     version was ended or destroyed, the store never had it, or it fails authentication)
     -> ``value_unreadable`` (:func:`refuse_unreadable`)

``consent_changed``: an actor role the policy does not know -> ``role_not_authorized``;
``allowed`` for a consent-based purpose; a prohibited, unknown or necessity-based purpose ->
``purpose_not_permitted`` (there is no consent to change).

``deletion_requested``: an actor role the policy does not know -> ``role_not_authorized`` and
nothing is erased; ``allowed`` (the erasure processor shreds); a request naming a category the
policy does not know -> ``not_collected`` and nothing is erased, so the privacy team sees it
on ``privacy.violations`` and files it again with policy names. Any role the policy knows may
file a customer's request or consent change (they act for the customer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

from processors.exceptions import EventError, StateError
from processors.policy import Citation, LegalHold, Policy, PolicyBook
from streams.events import InputEvent

# --------------------------------------------------------------------------- reason codes

ALLOWED: Final = "allowed"
PURPOSE_NOT_PERMITTED: Final = "purpose_not_permitted"
PURPOSE_NOT_DECLARED: Final = "purpose_not_declared"
ROLE_NOT_AUTHORIZED: Final = "role_not_authorized"
CONSENT_WITHDRAWN: Final = "consent_withdrawn"
RECIPIENT_NOT_TRUSTED: Final = "recipient_not_trusted"
PROHIBITED_COLLECTION: Final = "prohibited_collection"
NOT_COLLECTED: Final = "not_collected"
SUBJECT_ERASED: Final = "subject_erased"
RETENTION_EXPIRED: Final = "retention_expired"
VALUE_UNREADABLE: Final = "value_unreadable"

REASON_CODES: Final = frozenset(
    {
        ALLOWED,
        PURPOSE_NOT_PERMITTED,
        PURPOSE_NOT_DECLARED,
        ROLE_NOT_AUTHORIZED,
        CONSENT_WITHDRAWN,
        RECIPIENT_NOT_TRUSTED,
        PROHIBITED_COLLECTION,
        NOT_COLLECTED,
        SUBJECT_ERASED,
        RETENTION_EXPIRED,
        VALUE_UNREADABLE,
    }
)
ERASURE_REASONS: Final = frozenset({SUBJECT_ERASED, RETENTION_EXPIRED})

Decision = Literal["allow", "deny"]
EventKind = Literal["collected", "used", "shared", "deletion_requested", "consent_changed"]

STATE_FORMAT = 1
"""Written as ``"format"`` by :meth:`SubjectState.to_dict`; bumped when the shape changes."""

_NAME_LIMIT = 64
_RETENTION_SECTION = "RETENTION OF DATA"
_UNREADABLE_SECTION = "PROTECTION OF CUSTOMER'S PERSONAL INFORMATION"
"""Cited for ``value_unreadable`` by a policy file whose ``reason_codes`` does not cite it."""


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class Verdict:
    """The one decision an event gets."""

    decision: Decision
    reason_code: str
    rule: str
    """The policy rule that decided: its path in the policy file, [its section], and why."""
    policy_version: str
    categories: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"


# --------------------------------------------------------------------------- subject state


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
        return _instant(self.collected_at)


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


# --------------------------------------------------------------------------- decide


def decide(event: Mapping[str, Any], state: SubjectState, book: PolicyBook) -> Verdict:
    """The verdict on ``event`` (a decoded ``lifecycle.CustomerEvent``) for a subject in
    ``state``, under the policy version in force at its ``occurred_at``.

    Pure: the same event, state and book always give the same verdict. Raises
    :class:`~processors.exceptions.EventError` only for a value that is not a decoded
    CustomerEvent (which decoding already rules out); unknown names are denied, never raised.
    """
    try:
        policy = book.in_force(event["occurred_at"])
        kind = event["kind"]
        body = event["body"]
        role = event["actor"]["role"]
        if kind == "used" or kind == "shared":
            return _decide_use(policy, state, kind, role, body)
        if kind == "collected":
            return _decide_collection(policy, role, body)
        if kind == "consent_changed" or kind == "deletion_requested":
            if role not in policy.roles:  # a request must come from someone the policy knows
                rule = _unknown("roles", "role", role, policy.version)
                requested = body.get("categories") if kind == "deletion_requested" else None
                return Verdict(
                    "deny", ROLE_NOT_AUTHORIZED, rule, policy.version, _unique(requested or ())
                )
            if kind == "consent_changed":
                return _decide_consent(policy, body)
            return _decide_deletion(policy, state, body)
    except (KeyError, TypeError, AttributeError) as exc:
        raise EventError(f"not a decoded CustomerEvent: {type(exc).__name__}: {exc}") from exc
    raise EventError(f"not a decoded CustomerEvent: unknown kind {kind!r}")


def _decide_use(
    policy: Policy, state: SubjectState, kind: str, role: str, body: Mapping[str, Any]
) -> Verdict:
    categories = _unique(body["categories"])
    purpose_name: str = body["purpose"]
    version = policy.version

    def deny(reason_code: str, rule: str) -> Verdict:
        return Verdict("deny", reason_code, rule, version, categories)

    # 1. the purpose is permitted, and may use each category
    refused = policy.prohibited_purposes.get(purpose_name)
    if refused is not None:
        return deny(
            PURPOSE_NOT_PERMITTED,
            _rule(
                f"prohibited_purposes.{purpose_name}",
                refused.cites,
                f"{purpose_name} is refused for everyone",
            ),
        )
    purpose = policy.purposes.get(purpose_name)
    if purpose is None:
        return deny(PURPOSE_NOT_PERMITTED, _unknown("purposes", "purpose", purpose_name, version))
    for category in categories:
        if category not in purpose.categories and category in policy.categories:
            return deny(
                PURPOSE_NOT_PERMITTED,
                _rule(
                    f"purposes.{purpose_name}.categories",
                    purpose.cites,
                    f"{purpose_name} may not use {category}",
                ),
            )

    # 2. the actor's job function needs each category
    denied = _role_check(policy, role, categories)
    if denied is not None:
        return deny(ROLE_NOT_AUTHORIZED, denied)

    # 3. a recipient is trusted, and receives only what its agreement covers
    recipient_name = ""
    if kind == "shared":
        recipient_name = body["recipient"]
        recipient = policy.recipients.get(recipient_name)
        if recipient is None:
            return deny(
                RECIPIENT_NOT_TRUSTED,
                _unknown("recipients", "trusted recipient", recipient_name, version),
            )
        if purpose_name not in recipient.purposes:
            return deny(
                RECIPIENT_NOT_TRUSTED,
                _rule(
                    f"recipients.{recipient_name}.purposes",
                    recipient.cites,
                    f"agreement {recipient.agreement.reference} does not cover {purpose_name}",
                ),
            )
        for category in categories:
            if category not in recipient.categories:
                return deny(
                    RECIPIENT_NOT_TRUSTED,
                    _rule(
                        f"recipients.{recipient_name}.categories",
                        recipient.cites,
                        f"agreement {recipient.agreement.reference} does not cover {category}",
                    ),
                )

    # 4. not erased
    for category in categories:
        erased = state.erased.get(category)
        if erased is not None:
            how = (
                "at the customer's request"
                if erased.reason_code == SUBJECT_ERASED
                else ("when its retention period ran out")
            )
            return deny(
                erased.reason_code,
                _rule(
                    f"retention.{category}",
                    _section(policy, category),
                    f"{category} was erased {how} ({erased.erased_at}); its key is destroyed",
                ),
            )

    # 5. collected at all
    for category in categories:
        if category not in state.collected:
            cites = policy.categories[category].cites if category in policy.categories else None
            return deny(
                NOT_COLLECTED,
                _rule(
                    f"categories.{category}", cites, f"no {category} was collected for this subject"
                ),
            )

    # 6. declared at collection, or compatible with a declared purpose
    via: dict[str, str] = {}
    for category in categories:
        declared = state.collected[category].purposes
        source = purpose.permits_data_collected_for(declared)
        if source is None:
            return deny(
                PURPOSE_NOT_DECLARED,
                _rule(
                    f"purposes.{purpose_name}.compatible_with",
                    purpose.cites,
                    f"{category} was collected for {', '.join(declared) or 'no purpose'}; "
                    f"{purpose_name} is none of them nor compatible with one",
                ),
            )
        via[category] = source

    # 7. consent not withdrawn
    if purpose.consent_based and not state.consent_given(purpose_name, purpose.granted_by_default):
        return deny(
            CONSENT_WITHDRAWN,
            _rule(
                f"purposes.{purpose_name}.basis",
                purpose.cites,
                f"{purpose_name} rests on consent, which the customer withdrew",
            ),
        )

    # 8. allowed
    compatible = sorted({f"{c} via {q}" for c, q in via.items() if q != purpose_name})
    how = f" (compatible: {'; '.join(compatible)})" if compatible else ""
    if kind == "shared":
        recipient = policy.recipients[recipient_name]
        rule = _rule(
            f"recipients.{recipient_name}",
            recipient.cites,
            f"{role} may share {', '.join(categories) or 'nothing'} with {recipient_name} "
            f"for {purpose_name} under agreement {recipient.agreement.reference}{how}",
        )
    else:
        rule = _rule(
            f"purposes.{purpose_name}",
            purpose.cites,
            f"{role} may use {', '.join(categories) or 'nothing'} for {purpose_name}{how}",
        )
    return Verdict("allow", ALLOWED, rule, version, categories)


def _decide_collection(policy: Policy, role: str, body: Mapping[str, Any]) -> Verdict:
    channel: str = body["channel"]
    declared = _unique(body["purposes"])
    categories = _unique(item["category"] for item in body["data"])
    version = policy.version

    def deny(reason_code: str, rule: str) -> Verdict:
        return Verdict("deny", reason_code, rule, version, categories)

    # 1. a collection the policy forbids (refused whole: no value of it may be stored)
    for category in categories:
        prohibited = policy.prohibited_collections.get((channel, category))
        if prohibited is not None:
            return deny(
                PROHIBITED_COLLECTION,
                _rule(
                    f"prohibited_collections[{prohibited.index}]",
                    prohibited.cites,
                    f"{category} may not be collected via {channel}; "
                    "the whole collection is refused",
                ),
            )
    if channel not in policy.channels:
        return deny(PROHIBITED_COLLECTION, _unknown("channels", "channel", channel, version))
    for category in categories:
        if category not in policy.categories:
            return deny(
                PROHIBITED_COLLECTION, _unknown("categories", "data category", category, version)
            )

    # 2. collected for permitted purposes that may use each category
    if not declared:
        return deny(PURPOSE_NOT_PERMITTED, "purposes: a collection must declare its purposes")
    for purpose_name in declared:
        refused = policy.prohibited_purposes.get(purpose_name)
        if refused is not None:
            return deny(
                PURPOSE_NOT_PERMITTED,
                _rule(
                    f"prohibited_purposes.{purpose_name}",
                    refused.cites,
                    f"no data may be collected for {purpose_name}",
                ),
            )
        if purpose_name not in policy.purposes:
            return deny(
                PURPOSE_NOT_PERMITTED, _unknown("purposes", "purpose", purpose_name, version)
            )
    for category in categories:
        if not any(category in policy.purposes[p].categories for p in declared):
            return deny(
                PURPOSE_NOT_PERMITTED,
                _rule(
                    "purposes",
                    policy.categories[category].cites,
                    f"none of the declared purposes ({', '.join(declared)}) may use {category}",
                ),
            )

    # 3. the collecting actor's job function needs each category
    denied = _role_check(policy, role, categories)
    if denied is not None:
        return deny(ROLE_NOT_AUTHORIZED, denied)

    channel_rule = policy.channels[channel]
    return Verdict(
        "allow",
        ALLOWED,
        _rule(
            f"channels.{channel}",
            channel_rule.cites,
            f"{role} may collect {', '.join(categories) or 'nothing'} via {channel} "
            f"for {', '.join(declared)}",
        ),
        version,
        categories,
    )


def _decide_consent(policy: Policy, body: Mapping[str, Any]) -> Verdict:
    purpose_name: str = body["purpose"]
    granted = bool(body["granted"])
    version = policy.version
    refused = policy.prohibited_purposes.get(purpose_name)
    if refused is not None:
        rule = _rule(
            f"prohibited_purposes.{purpose_name}",
            refused.cites,
            f"{purpose_name} is refused for everyone; no consent can permit it",
        )
        return Verdict("deny", PURPOSE_NOT_PERMITTED, rule, version, ())
    purpose = policy.purposes.get(purpose_name)
    if purpose is None:
        rule = _unknown("purposes", "purpose", purpose_name, version)
        return Verdict("deny", PURPOSE_NOT_PERMITTED, rule, version, ())
    if not purpose.consent_based:
        rule = _rule(
            f"purposes.{purpose_name}.basis",
            purpose.cites,
            f"{purpose_name} rests on necessity, not consent: there is no consent to "
            f"{'grant' if granted else 'withdraw'}",
        )
        return Verdict("deny", PURPOSE_NOT_PERMITTED, rule, version, ())
    change = "re-granted" if granted else "withdrawn"
    rule = _rule(
        f"purposes.{purpose_name}.basis",
        purpose.cites,
        f"consent to {purpose_name} {change}; applies to every later event of this subject",
    )
    return Verdict("allow", ALLOWED, rule, version, ())


def _decide_deletion(policy: Policy, state: SubjectState, body: Mapping[str, Any]) -> Verdict:
    requested = body.get("categories")
    version = policy.version
    categories = tuple(sorted(state.collected)) if requested is None else _unique(requested)
    for category in categories:
        if category not in policy.categories:
            rule = (
                f"categories: the request names {_clip(category)!r}, not a data category of "
                f"policy {version}; nothing was erased: file it again with policy names"
            )
            return Verdict("deny", NOT_COLLECTED, rule, version, categories)
    scope = "every category held" if requested is None else ", ".join(categories) or "nothing"
    rule = _rule(
        "retention",
        _RETENTION_SECTION if _RETENTION_SECTION in policy.sections else None,
        f"erasure requested ({scope}): shred, except what the law requires be kept",
    )
    return Verdict("allow", ALLOWED, rule, version, categories)


def _role_check(policy: Policy, role_name: str, categories: Sequence[str]) -> str | None:
    role = policy.roles.get(role_name)
    if role is None:
        return _unknown("roles", "role", role_name, policy.version)
    for category in categories:
        if category not in role.categories:
            if category not in policy.categories:
                return (
                    f"roles.{role_name}.categories: {_clip(category)!r} is not a data category "
                    f"of policy {policy.version}, so no role may touch it"
                )
            return _rule(
                f"roles.{role_name}.categories",
                role.cites,
                f"{role_name} may not touch {category}",
            )
    return None


# --------------------------------------------------------------------------- unreadable values


def refuse_unreadable(verdict: Verdict, unreadable: Mapping[str, str], book: PolicyBook) -> Verdict:
    """The verdict on an allowed collection some of whose values cannot be read now
    (``unreadable``: category -> why, e.g. "key version 3 was destroyed"): refused
    ``value_unreadable``, the whole event, as any refused collection is. Nothing of it is
    held, so the ledger never records an allowed collection, nor a later allowed use, of a
    value nobody can read; the rule cites the policy file's ``reason_codes.value_unreadable``."""
    policy = book.get(verdict.policy_version)
    cites = policy.reason_codes.get(VALUE_UNREADABLE)
    why = "; ".join(f"{category}: {reason}" for category, reason in unreadable.items())
    rule = _rule(
        f"reason_codes.{VALUE_UNREADABLE}",
        cites if cites is not None else _UNREADABLE_SECTION,
        f"{_clip(why)}; the value cannot be read, so nothing of this collection is held",
    )
    return Verdict("deny", VALUE_UNREADABLE, rule, verdict.policy_version, verdict.categories)


class RefusalScreen:
    """The publisher's check of a collection before it is sent: will the worker refuse it?

    A collection's verdict depends only on the policy in force at its ``occurred_at``, the
    channel, purposes, categories and the actor's role (checks 1 to 3 above), never on the
    customer's state, so this is the verdict itself. The publisher then encrypts the
    collection's values under key versions of their own, which the refusal destroys without
    touching any other value (see streams.publisher)."""

    __slots__ = ("_book",)

    def __init__(self, book: PolicyBook) -> None:
        self._book = book

    def refuses(self, event: InputEvent) -> bool:
        body = {
            "channel": event.body["channel"],
            "purposes": event.body["purposes"],
            "data": [{"category": c} for c in (*event.data, *event.withheld)],
        }
        policy = self._book.in_force(event.occurred_at)
        return not _decide_collection(policy, event.actor_role, body).allowed


# --------------------------------------------------------------------------- apply


def apply(event: Mapping[str, Any], verdict: Verdict, state: SubjectState) -> SubjectState:
    """The subject's state after ``event`` got ``verdict``. A denied event changes nothing.

    * ``collected``: each category is recorded with the event's purposes, key version, instant
      and policy version (a value the publisher withheld, key version 0, is not). A category
      collected again supersedes the earlier record (rectification; a new key version after a
      shred) and keeps the purposes declared before (the customer was told of both); one that
      had been erased or held starts afresh.
    * ``consent_changed``: records the customer's choice for the purpose.
    * ``used``, ``shared``, ``deletion_requested``: nothing (erasure is :func:`apply_erasure`).
    """
    if not verdict.allowed:
        return state
    kind = event["kind"]
    if kind == "collected":
        body = event["body"]
        declared = _unique(body["purposes"])
        collected_at = _iso(event["occurred_at"])
        collected = dict(state.collected)
        erased = dict(state.erased)
        held = dict(state.held)
        keys = dict(state.keys)
        for item in body["data"]:
            if item["key_version"] < 1:
                continue  # withheld by the publisher: no value of it exists anywhere
            category = item["category"]
            earlier = collected.get(category)
            purposes = declared
            if earlier is not None and category not in held:
                purposes = _unique((*earlier.purposes, *declared))
            version = int(item["key_version"])
            collected[category] = Collection(
                purposes, version, collected_at, verdict.policy_version
            )
            erased.pop(category, None)
            held.pop(category, None)
            keys[category] = _allowing(state.versions(category), version)
        return replace(state, collected=collected, erased=erased, held=held, keys=keys)
    if kind == "consent_changed":
        body = event["body"]
        consent = dict(state.consent)
        consent[body["purpose"]] = bool(body["granted"])
        return replace(state, consent=consent)
    return state


def _allowing(versions: KeyVersions, version: int) -> KeyVersions:
    if version in versions.allowed:
        return versions
    return replace(versions, allowed=tuple(sorted((*versions.allowed, version))))


# --------------------------------------------------------------------------- erasure, retention


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
    targets = tuple(sorted({*state.collected, *live})) if requested is None else _unique(requested)
    today = _aware(at).date()
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
        marks.update(dict.fromkeys(unheld, Erased(SUBJECT_ERASED, _iso(at))))
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
    erased_at = _iso(at)
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
            keys[category] = _allowing(state.versions(category), version)
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


def expired(state: SubjectState, book: PolicyBook, as_of: datetime) -> list[str]:
    """Held categories whose retention ran out by ``as_of`` (sorted), judged by the policy
    version in force at ``as_of``: its ``period`` from the latest collection (extended by a
    longer legal ``keep_for``); or, for a category kept after an erasure request, its
    until-date has passed."""
    as_of = _aware(as_of)
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


# --------------------------------------------------------------------------- helpers


def _rule(path: str, cites: Citation | str | None, text: str) -> str:
    section = cites.section if isinstance(cites, Citation) else cites
    return f"{path} [{section}]: {text}" if section else f"{path}: {text}"


def _unknown(path: str, what: str, name: str, version: str) -> str:
    return f"{path}: {_clip(name)!r} is not a {what} of policy {version}"


def _section(policy: Policy, category: str) -> str | None:
    retention = policy.retentions.get(category)
    return retention.cites.section if retention is not None else None


def _clip(name: str) -> str:
    """A name from an event, shortened for a rule text (names only; never values)."""
    return name if len(name) <= _NAME_LIMIT else name[: _NAME_LIMIT - 1] + "…"


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _iso(at: datetime) -> str:
    return _aware(at).isoformat()


def _instant(text: str) -> datetime:
    return _aware(datetime.fromisoformat(text))
