"""The decision engine: one verdict per event, from the policy in force and the subject's state.

Pure functions over plain values (no Kafka, no clock, no keys): :func:`decide` judges a decoded
``lifecycle.CustomerEvent`` against the :class:`~processors.policy.Policy` in force at its
``occurred_at`` and the subject's :class:`SubjectState`; :func:`apply` folds an allowed event
into the state; what erasure requests and retention sweeps do is :mod:`processors.erasure`.
:func:`refuse_unreadable` refuses a collection whose value cannot be read, and
:class:`RefusalScreen` lets the publisher tell a collection the policy refuses before it is sent
(a collection's verdict depends on no state).

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

Before any of this, the worker checks who sent the event (:mod:`processors.authentication`):
an event no registered source vouches for is denied ``source_unauthenticated``, and one whose
source may not assert its role, or file its erasure or consent withdrawal, is denied
``source_not_authorized``; neither reaches :func:`decide`, and neither changes any state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.instants import iso
from processors.exceptions import EventError
from processors.policy import Citation, Policy, PolicyBook
from processors.reasons import (
    ALLOWED,
    CONSENT_WITHDRAWN,
    NOT_COLLECTED,
    PROHIBITED_COLLECTION,
    PURPOSE_NOT_DECLARED,
    PURPOSE_NOT_PERMITTED,
    RECIPIENT_NOT_TRUSTED,
    ROLE_NOT_AUTHORIZED,
    SUBJECT_ERASED,
    VALUE_UNREADABLE,
    Decision,
)
from processors.state import Collection, SubjectState
from schemas.kinds import judged_as
from streams.events import InputEvent

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
        judged = judged_as(kind)
        if judged == "use":
            return _decide_use(policy, state, role, body)
        if judged == "collection":
            return _decide_collection(policy, role, body)
        if judged == "consent" or judged == "erasure":
            if role not in policy.roles:  # a request must come from someone the policy knows
                rule = _unknown("roles", "role", role, policy.version)
                requested = body.get("categories") if judged == "erasure" else None
                return Verdict(
                    "deny", ROLE_NOT_AUTHORIZED, rule, policy.version, _unique(requested or ())
                )
            if judged == "consent":
                return _decide_consent(policy, body)
            return _decide_deletion(policy, state, body)
    except (KeyError, TypeError, AttributeError) as exc:
        raise EventError(f"not a decoded CustomerEvent: {type(exc).__name__}: {exc}") from exc
    raise EventError(f"not a decoded CustomerEvent: unknown kind {kind!r}")


def _decide_use(policy: Policy, state: SubjectState, role: str, body: Mapping[str, Any]) -> Verdict:
    """A use, or a share when the body names a recipient."""
    categories = _unique(body["categories"])
    purpose_name: str = body["purpose"]
    recipient_name: str | None = body.get("recipient")
    version = policy.version

    def deny(reason_code: str, rule: str) -> Verdict:
        return Verdict("deny", reason_code, rule, version, categories)

    # 1. the purpose is permitted, and may use each category
    refused = _prohibited(policy, purpose_name, f"{purpose_name} is refused for everyone")
    if refused is not None:
        return deny(PURPOSE_NOT_PERMITTED, refused)
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
    if recipient_name is not None:
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
    if recipient_name is not None:
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
        refused = _prohibited(policy, purpose_name, f"no data may be collected for {purpose_name}")
        if refused is not None:
            return deny(PURPOSE_NOT_PERMITTED, refused)
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
    text = f"{purpose_name} is refused for everyone; no consent can permit it"
    refused = _prohibited(policy, purpose_name, text)
    if refused is not None:
        return Verdict("deny", PURPOSE_NOT_PERMITTED, refused, version, ())
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
    judged = judged_as(event["kind"])
    if judged == "collection":
        body = event["body"]
        declared = _unique(body["purposes"])
        collected_at = iso(event["occurred_at"])
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
            keys[category] = state.versions(category).allowing(version)
        return replace(state, collected=collected, erased=erased, held=held, keys=keys)
    if judged == "consent":
        body = event["body"]
        consent = dict(state.consent)
        consent[body["purpose"]] = bool(body["granted"])
        return replace(state, consent=consent)
    return state


# --------------------------------------------------------------------------- helpers


def _rule(path: str, cites: Citation | str | None, text: str) -> str:
    section = cites.section if isinstance(cites, Citation) else cites
    return f"{path} [{section}]: {text}" if section else f"{path}: {text}"


def _prohibited(policy: Policy, purpose_name: str, text: str) -> str | None:
    """The rule (saying ``text``) refusing ``purpose_name`` for everyone (sale, trade ...), or
    None when the policy does not prohibit it."""
    refused = policy.prohibited_purposes.get(purpose_name)
    if refused is None:
        return None
    return _rule(f"prohibited_purposes.{purpose_name}", refused.cites, text)


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
