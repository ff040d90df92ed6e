"""The customer's access report: what is held, what it was collected for, every use and share,
consent, and what was erased (policy, RETENTION OF DATA: customers may ask to see the data
stored, its use, and the parties it is shared with).

Built from the pipeline's durable stores only: the vault (current encrypted values), the key
store (which keys live or were shredded, when and why) and the audit ledger (every decision).
Values are decrypted only for a privacy officer; a shredded value reads as a stated placeholder.

The purposes shown for a held category are those the decision engine allows it to be used for:
the subject's state is rebuilt from the ledger's decisions with the engine's own functions
(:mod:`processors.rules`), so a correction that declares new purposes adds to the earlier ones
there as it does in the workers. Instants are ISO-8601 with their zone (UTC).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from core.instants import iso
from core.terminal import table
from processors.erasure import ErasurePlan, RetainedCategory, apply_erasure, mark_erased
from processors.policy import Policy
from processors.reasons import ALLOWED, RETENTION_EXPIRED, SUBJECT_ERASED
from processors.rules import Verdict, apply
from processors.state import SubjectState
from schemas.kinds import RETENTION_SWEEP, judged_as
from sinks.ledger import iter_records
from sinks.vault import Vault
from streams.envelope import reveal
from streams.keys import IDENTITY_CATEGORY, KeyStore
from streams.revocations import REPLAYED

DISCLOSING_ROLE = "privacy_officer"


@dataclass
class HeldCategory:
    category: str
    value: str
    collected_at: str
    channel: str
    purposes: list[str]


@dataclass
class Access:
    """One use or share of the subject's data (allowed or refused)."""

    occurred_at: str
    kind: str
    categories: list[str]
    purpose: str | None
    recipient: str | None
    actor_role: str | None
    decision: str
    reason_code: str


@dataclass
class ErasedCategory:
    category: str
    reason: str
    erased_at: str


@dataclass
class SubjectReport:
    subject_ref: str
    held: list[HeldCategory] = field(default_factory=list)
    uses: list[Access] = field(default_factory=list)
    consent: dict[str, bool] = field(default_factory=dict)
    """The customer's explicit choices (consent-based purposes)."""
    consent_defaults: dict[str, bool] = field(default_factory=dict)
    """Consent-based purposes the customer never changed: the policy's default, in force now."""
    erased: list[ErasedCategory] = field(default_factory=list)
    erasure_requests: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"Subject {self.subject_ref}", "", "Held data:"]
        held = [
            (
                item.category,
                item.value,
                f" (collected {item.collected_at} via {item.channel} "
                f"for {', '.join(item.purposes)})",
            )
            for item in self.held
        ]
        lines += table(held, min_widths=(16,), indent=2) or ["  (nothing)"]
        lines += ["", "Uses and disclosures:"]
        uses = [
            (
                use.occurred_at,
                f" {use.kind}",
                f"{','.join(use.categories)} for {use.purpose}"
                + (f" to {use.recipient}" if use.recipient else "")
                + f" by {use.actor_role}: {use.decision} ({use.reason_code})",
            )
            for use in self.uses
        ]
        lines += table(uses, min_widths=(0, 7), indent=2) or ["  (none)"]
        lines += ["", "Consent:"]
        choices = [(p, g, "") for p, g in self.consent.items()]
        choices += [(p, g, " (policy default)") for p, g in self.consent_defaults.items()]
        lines += [
            f"  {purpose}: {'granted' if granted else 'withdrawn'}{marker}"
            for purpose, granted, marker in sorted(choices)
        ] or ["  (no consent-based purposes)"]
        lines += ["", "Erased:"]
        erased = [(e.category, f"{e.reason} at {e.erased_at}") for e in self.erased]
        lines += table(erased, min_widths=(16,), indent=2) or ["  (nothing)"]
        for request in self.erasure_requests:
            lines.append(
                f"  request {request['request_id']}: {request['status']}; retained "
                + (
                    ", ".join(
                        f"{r['category']} until {r['until']} ({r['basis']})"
                        for r in request["retained"]
                    )
                    or "nothing"
                )
            )
        return "\n".join(lines)


def subject_report(
    engine: Engine,
    keystore: KeyStore,
    subject_id: str,
    *,
    role: str = DISCLOSING_ROLE,
    policy: Policy | None = None,
) -> SubjectReport:
    """The report on ``subject_id``; ``policy`` (the version in force now) supplies the consent
    defaults (none are shown without it)."""
    ref = keystore.subject_ref(subject_id)
    report = SubjectReport(ref)
    records = [entry.as_export() for entry in iter_records(engine, subject_ref=ref)]
    state = decision_state(records)
    for value in Vault(engine).held(ref):
        shown = (
            reveal(keystore, value.event_id, ref, value.encrypted_value())
            if role == DISCLOSING_ROLE
            else "[hidden: only a privacy officer sees values]"
        )
        collection = state.collected.get(value.category)
        report.held.append(
            HeldCategory(
                value.category,
                shown,
                iso(value.collected_at),
                value.channel,
                list(collection.purposes if collection is not None else value.purposes),
            )
        )
    for record in records:
        judged = judged_as(record["kind"])
        if judged == "use":
            report.uses.append(
                Access(
                    record["occurred_at"],
                    record["kind"],
                    record["categories"],
                    record["purpose"],
                    record["recipient"],
                    record["actor_role"],
                    record["decision"],
                    record["reason_code"],
                )
            )
        elif judged == "erasure" and record["erasure"]:
            report.erasure_requests.append(record["erasure"])
    report.consent = dict(sorted(state.consent.items()))
    if policy is not None:
        report.consent_defaults = {
            name: purpose.granted_by_default
            for name, purpose in sorted(policy.purposes.items())
            if purpose.consent_based and name not in state.consent
        }
    for key in keystore.keys_of(ref):
        # a key destroyed because a collection was refused (its reason code) erased nothing
        # the customer had given: the held value, if any, lives on under the next key
        if key.shred_reason not in ERASURE_REASONS:
            continue
        if key.shredded_at is not None and key.category != IDENTITY_CATEGORY:
            report.erased.append(
                ErasedCategory(key.category, key.shred_reason or "shredded", iso(key.shredded_at))
            )
    return report


ERASURE_REASONS = frozenset({SUBJECT_ERASED, RETENTION_EXPIRED, REPLAYED})
"""Shred reasons that are erasures of the customer's data (a request, a retention sweep, or
either replayed after a restore)."""


def decision_state(records: Iterable[Mapping[str, Any]]) -> SubjectState:
    """The subject's decision state, rebuilt from its ledger records (as exported, in seq
    order) with the decision engine's functions: what was collected for which purposes,
    consent, what was erased or held."""
    state = SubjectState()
    for record in records:
        at = datetime.fromisoformat(record["occurred_at"])
        kind, allowed = record["kind"], record["decision"] == "allow"
        judged = judged_as(kind)
        if judged in ("collection", "consent") and allowed:
            verdict = Verdict("allow", ALLOWED, record["rule"], record["policy_version"], ())
            body: dict[str, Any] = {
                "purposes": record["purposes"],
                "data": [{"category": c, "key_version": 1} for c in record["categories"]],
                "purpose": record["purpose"],
                "granted": record["consent_granted"],
            }
            state = apply({"kind": kind, "occurred_at": at, "body": body}, verdict, state)
        elif judged == "erasure" and allowed and record["erasure"]:
            erasure = record["erasure"]
            plan = ErasurePlan(
                tuple(erasure["shredded"]),
                tuple(
                    RetainedCategory(r["category"], r["basis"], r["until"])
                    for r in erasure["retained"]
                ),
            )
            state = apply_erasure(state, plan, at)
        elif kind == RETENTION_SWEEP:
            state = mark_erased(state, record["categories"], RETENTION_EXPIRED, at)
    return state
