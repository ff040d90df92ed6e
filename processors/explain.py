"""Explaining the policy: what a version says, and what it decides for one event, offline.

Used by ``lifecycle policy show`` and ``lifecycle policy check`` (:mod:`lifecycle.cli.policy`).
Nothing here touches a broker, a key store or a database. Events are read in the contract's
JSON-lines input format and validated exactly as the publisher validates them
(:func:`streams.events.validate`); their values are dropped at once and never printed, and
neither is ``subject_id`` (it only selects which ``--state`` lines belong to the same customer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from core.instants import aware
from core.terminal import table
from processors.erasure import apply_erasure, expired, mark_erased, plan_erasure
from processors.policy import Citation, Policy, PolicyBook, Vocabulary
from processors.reasons import RETENTION_EXPIRED
from processors.rules import Verdict, apply, decide
from processors.state import SubjectState
from schemas.kinds import KINDS, judged_as
from streams.events import InputEvent, decode_line, validate
from streams.exceptions import ValidationError

CHECK_SUBJECT_REF = "(policy check)"
"""The ``subject_ref`` of events built here: no key store is opened, so none is computed."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""What a name from an event must look like to be judged although the policy does not know it
(anything else may be personal data in the wrong field: it is refused, never repeated)."""


# --------------------------------------------------------------------------- policy show


def describe_policy(policy: Policy) -> dict[str, Any]:
    """A JSON-safe description of one version, every rule with its citation."""

    def cited(cites: Citation, **fields: Any) -> dict[str, Any]:
        described = {**fields, "cites": {"section": cites.section, "quote": cites.quote}}
        if cites.also:
            described["also_cites"] = [{"section": c.section, "quote": c.quote} for c in cites.also]
        return described

    return {
        "version": policy.version,
        "effective_from": policy.effective_from.isoformat(),
        "effective_from_cites": [
            {"section": c.section, "quote": c.quote} for c in policy.effective_from_cites.every()
        ],
        "title": policy.title,
        "source": policy.source,
        "notes": policy.notes,
        "file": str(policy.file),
        "sections": list(policy.sections),
        "categories": {
            name: cited(rule.cites, description=rule.description)
            for name, rule in policy.categories.items()
        },
        "channels": {
            name: cited(rule.cites, description=rule.description)
            for name, rule in policy.channels.items()
        },
        "purposes": {
            name: cited(
                rule.cites,
                basis=rule.basis,
                **({"granted_by_default": rule.granted_by_default} if rule.consent_based else {}),
                categories=sorted(rule.categories),
                compatible_with="all" if rule.compatible_with_all else sorted(rule.compatible_with),
            )
            for name, rule in policy.purposes.items()
        },
        "prohibited_purposes": {
            name: cited(rule.cites) for name, rule in policy.prohibited_purposes.items()
        },
        "roles": {
            name: cited(rule.cites, categories=sorted(rule.categories))
            for name, rule in policy.roles.items()
        },
        "recipients": {
            name: cited(
                rule.cites,
                agreement={"name": rule.agreement.name, "reference": rule.agreement.reference},
                categories=sorted(rule.categories),
                purposes=sorted(rule.purposes),
            )
            for name, rule in policy.recipients.items()
        },
        "prohibited_collections": [
            cited(rule.cites, channel=rule.channel, category=rule.category)
            for rule in sorted(policy.prohibited_collections.values(), key=lambda r: r.index)
        ],
        "retention": {
            name: cited(
                rule.cites,
                period=None if rule.period is None else str(rule.period),
                legal_basis=rule.legal_basis,
                keep_for=None if rule.keep_for is None else str(rule.keep_for),
            )
            for name, rule in policy.retentions.items()
        },
    }


def render_policy(policy: Policy, book: PolicyBook, at: datetime) -> str:
    """The version in force at ``at``, as text for a terminal."""
    width = 2 + max(
        len(name)
        for group in (policy.categories, policy.purposes, policy.roles, policy.recipients)
        for name in group
    )
    lines = [
        f"{policy.title}, version {policy.version} (in force at {at.isoformat()})",
        f"effective from {policy.effective_from.isoformat()} ({policy.effective_from_cites}); "
        f"file {policy.file}",
        f"versions: {', '.join(book.versions)}",
    ]
    if policy.notes:
        lines.append(f"notes: {policy.notes}")

    def block(title: str, rules: Iterable[tuple[str, str, Citation]]) -> None:
        rows: list[tuple[str, str]] = []
        for name, text, cites in rules:
            rows.append((name, text))
            rows.extend(("", str(each)) for each in cites.every())
        lines.extend(["", title, *table(rows, min_widths=(width,), gap=0, indent=2)])

    block(
        "CATEGORIES",
        ((name, rule.description, rule.cites) for name, rule in policy.categories.items()),
    )
    block(
        "CHANNELS",
        ((name, rule.description, rule.cites) for name, rule in policy.channels.items()),
    )
    block(
        "PURPOSES (basis; categories it may use; collection purposes it is compatible with)",
        ((name, _purpose_text(policy, name), rule.cites) for name, rule in policy.purposes.items()),
    )
    block(
        "PROHIBITED PURPOSES (refused for everyone)",
        ((name, "refused", rule.cites) for name, rule in policy.prohibited_purposes.items()),
    )
    block(
        "ROLES (categories the job function needs)",
        (
            (name, _names(rule.categories, policy.categories), rule.cites)
            for name, rule in policy.roles.items()
        ),
    )
    block(
        "RECIPIENTS (trusted, under agreement)",
        (
            (
                name,
                f"agreement {rule.agreement.reference} ({rule.agreement.name}); "
                f"categories: {_names(rule.categories, policy.categories)}; "
                f"purposes: {', '.join(sorted(rule.purposes))}",
                rule.cites,
            )
            for name, rule in policy.recipients.items()
        ),
    )
    block(
        "PROHIBITED COLLECTIONS",
        (
            (f"[{rule.index}]", f"{rule.category} via {rule.channel}", rule.cites)
            for rule in sorted(policy.prohibited_collections.values(), key=lambda r: r.index)
        ),
    )
    block(
        "RETENTION (from the latest collection)",
        (
            (name, _retention_text(policy, name), rule.cites)
            for name, rule in policy.retentions.items()
        ),
    )
    return "\n".join(lines)


def _purpose_text(policy: Policy, name: str) -> str:
    rule = policy.purposes[name]
    basis: str = rule.basis
    if rule.consent_based:
        default = "granted" if rule.granted_by_default else "not granted"
        basis = f"consent ({default} by default, withdrawable)"
    compatible = (
        "any purpose"
        if rule.compatible_with_all
        else ", ".join(sorted(rule.compatible_with)) or "none"
    )
    categories = _names(rule.categories, policy.categories)
    return f"{basis}; uses: {categories}; compatible with: {compatible}"


def _retention_text(policy: Policy, name: str) -> str:
    rule = policy.retentions[name]
    text = "while its purposes last" if rule.period is None else f"{rule.period}"
    if rule.keep_for is not None:
        text += f"; the law requires {rule.keep_for} ({rule.legal_basis})"
    return text


def _names(names: frozenset[str], every: Mapping[str, Any]) -> str:
    return "all" if names == set(every) else ", ".join(sorted(names))


# --------------------------------------------------------------------------- policy check


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What ``policy check`` found: the verdict, and how the subject's state was built."""

    event_id: str
    kind: str
    occurred_at: datetime
    verdict: Verdict
    prior_events: int
    """Earlier events of the same subject (from ``--state``) replayed into its state."""
    publisher_refusal: str | None = None
    """``field: reason`` when the publisher would refuse the line for a name the policy does
    not know; the verdict is then the one the worker gives such an event from another
    producer."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "occurred_at": self.occurred_at.isoformat(),
            "decision": self.verdict.decision,
            "reason_code": self.verdict.reason_code,
            "rule": self.verdict.rule,
            "policy_version": self.verdict.policy_version,
            "categories": list(self.verdict.categories),
            "prior_events": self.prior_events,
            "publisher_refusal": self.publisher_refusal,
        }


def decoded_event(event: InputEvent) -> dict[str, Any]:
    """The ``lifecycle.CustomerEvent`` the publisher would send for ``event``, with every value
    (and ``subject_id``) replaced by empty bytes: the decision never needs them."""
    body: dict[str, Any] = dict(event.body)
    if KINDS[event.kind].carries_values:
        body["data"] = [
            {"category": category, "key_version": 1, "nonce": b"", "ciphertext": b""}
            for category in event.data
        ] + [
            {"category": category, "key_version": 0, "nonce": b"", "ciphertext": b""}
            for category in event.withheld
        ]
    return {
        "event_id": event.event_id,
        "kind": event.kind,
        "occurred_at": event.occurred_at,
        "published_at": event.occurred_at,
        "source": event.source,
        "subject_ref": CHECK_SUBJECT_REF,
        "subject": {"category": "subject_id", "key_version": 1, "nonce": b"", "ciphertext": b""},
        "actor": {"id": event.actor_id, "role": event.actor_role},
        "body": body,
    }


def parse_input(line: str | bytes, book: PolicyBook, *, now: datetime) -> InputEvent:
    """One JSON line of the input format, validated as the publisher does (ValidationError)."""
    return _validated(decode_line(line), book.vocabulary(), now=now)


def _validated(obj: Any, vocabulary: Vocabulary, *, now: datetime) -> InputEvent:
    event = validate(obj, vocabulary, now=now)
    event.data = dict.fromkeys(event.data, "")  # drop the values now: never needed, never shown
    return event


def parse_target(
    line: str | bytes, book: PolicyBook, *, now: datetime
) -> tuple[InputEvent, str | None]:
    """The event to judge, and the publisher's refusal of it (``field: reason``) when the line
    names a category, purpose or channel the policy does not know but is otherwise valid: such
    an event reaches the worker from producers other than ours, and is judged all the same.
    Any other problem raises the publisher's :class:`~streams.exceptions.ValidationError`."""
    try:
        return parse_input(line, book, now=now), None
    except ValidationError as refusal:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise refusal from None
        vocabulary = book.vocabulary()
        widened = _widened(vocabulary, obj)
        if widened == vocabulary:
            raise
        try:
            event = _validated(obj, widened, now=now)
        except ValidationError:
            raise refusal from None
        return event, f"{refusal.field}: {refusal.message}"


def _widened(vocabulary: Vocabulary, obj: Any) -> Vocabulary:
    """``vocabulary`` plus the name-like categories, purposes and channel ``obj`` names."""
    if not isinstance(obj, dict):
        return vocabulary

    def names(*values: Any) -> frozenset[str]:
        found: set[str] = set()
        for value in values:
            items = value if isinstance(value, list | dict) else [value]
            found.update(n for n in items if isinstance(n, str) and _NAME.match(n))
        return frozenset(found)

    categories = names(obj.get("categories"), obj.get("data")) - vocabulary.categories
    purposes = names(obj.get("purposes"), obj.get("purpose")) - vocabulary.purposes
    channels = names(obj.get("channel")) - vocabulary.channels
    if not (categories or purposes or channels):
        return vocabulary
    return replace(
        vocabulary,
        categories=vocabulary.categories | categories,
        purposes=vocabulary.purposes | purposes,
        channels=vocabulary.channels | channels,
    )


def replay(events: Iterable[Mapping[str, Any]], book: PolicyBook) -> SubjectState:
    """A subject's state after ``events`` (decoded, in the subject's order), as the worker
    builds it: retention sweeps are assumed to have run on time, and allowed erasure requests
    are carried out."""
    state = SubjectState()
    for event in events:
        state = step(event, state, book)[1]
    return state


def step(
    event: Mapping[str, Any], state: SubjectState, book: PolicyBook
) -> tuple[Verdict, SubjectState]:
    """Judge one event as the worker would: sweep what expired by its instant, decide, apply."""
    at: datetime = event["occurred_at"]
    due = expired(state, book, at)
    if due:
        state = mark_erased(state, due, RETENTION_EXPIRED, at)
    verdict = decide(event, state, book)
    state = apply(event, verdict, state)
    if judged_as(event["kind"]) == "erasure" and verdict.allowed:
        plan = plan_erasure(state, event["body"].get("categories"), book.in_force(at), at)
        state = apply_erasure(state, plan, at)
    return verdict, state


def check_event(
    line: str | bytes,
    book: PolicyBook,
    *,
    state_lines: Iterable[str | bytes] = (),
    at: datetime | None = None,
    now: datetime | None = None,
) -> CheckResult:
    """The verdict the pipeline would give the event on ``line``: judged at ``at`` (default:
    its ``occurred_at``, else now), for a subject whose earlier events are the ``state_lines``
    with the same ``subject_id`` (blank lines skipped; other subjects' lines ignored).

    A ``line`` the publisher refuses only for a category, purpose or channel the policy does
    not know is judged as the worker judges it from another producer, the refusal kept in
    ``publisher_refusal``. Raises :class:`~streams.exceptions.ValidationError` for any other
    line the publisher would refuse, and for any refused ``state_lines`` line (its field then
    starts with ``state line N``).
    """
    now = now or datetime.now(UTC)
    target, refusal = parse_target(line, book, now=now)
    if at is not None:
        target.occurred_at = aware(at)
    prior: list[dict[str, Any]] = []
    for number, state_line in enumerate(state_lines, start=1):
        if not state_line.strip():
            continue
        try:
            earlier = parse_input(state_line, book, now=now)
        except ValidationError as exc:
            raise ValidationError(f"state line {number}: {exc.field}", exc.message) from None
        if earlier.subject_id == target.subject_id:
            prior.append(decoded_event(earlier))
    state = replay(prior, book)
    verdict, _ = step(decoded_event(target), state, book)
    return CheckResult(
        target.event_id, target.kind, target.occurred_at, verdict, len(prior), refusal
    )


def render_check(result: CheckResult) -> str:
    """The verdict as aligned ``field: value`` lines."""
    fields = result.to_dict()
    fields["categories"] = ", ".join(result.verdict.categories) or "-"
    order = (
        *("decision", "reason_code", "rule", "policy_version", "categories"),
        *("kind", "event_id", "occurred_at", "prior_events"),
    )
    rows = [(f"{name}:", str(fields[name])) for name in order]
    if result.publisher_refusal is not None:
        rows.append(
            (
                "publisher:",
                f"would refuse this line ({result.publisher_refusal}); "
                "the decision above is the worker's for such an event from another producer",
            )
        )
    return "\n".join(table(rows, min_widths=(16,), gap=0))
