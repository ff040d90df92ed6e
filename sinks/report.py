"""The customer's access report: what is held, what it was collected for, every use and share,
consent, and what was erased (policy, RETENTION OF DATA: customers may ask to see the data
stored, its use, and the parties it is shared with).

Built from the pipeline's durable stores only: the vault (current encrypted values), the key
store (which keys live or were shredded, when and why) and the audit ledger (every decision).
Values are decrypted only for a privacy officer; a shredded value reads as a stated placeholder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine

from sinks.ledger import iter_records
from sinks.vault import Vault
from streams.envelope import reveal
from streams.keys import IDENTITY_CATEGORY, KeyStore

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
    erased: list[ErasedCategory] = field(default_factory=list)
    erasure_requests: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"Subject {self.subject_ref}", "", "Held data:"]
        for item in self.held:
            lines.append(
                f"  {item.category:<16} {item.value}  (collected {item.collected_at} "
                f"via {item.channel} for {', '.join(item.purposes)})"
            )
        if not self.held:
            lines.append("  (nothing)")
        lines += ["", "Uses and disclosures:"]
        for use in self.uses:
            party = f" to {use.recipient}" if use.recipient else ""
            lines.append(
                f"  {use.occurred_at}  {use.kind:<6} {','.join(use.categories)} for "
                f"{use.purpose}{party} by {use.actor_role}: {use.decision} ({use.reason_code})"
            )
        if not self.uses:
            lines.append("  (none)")
        lines += ["", "Consent:"]
        lines += [
            f"  {purpose}: {'granted' if granted else 'withdrawn'}"
            for purpose, granted in sorted(self.consent.items())
        ] or ["  (policy defaults)"]
        lines += ["", "Erased:"]
        lines += [f"  {e.category:<16} {e.reason} at {e.erased_at}" for e in self.erased] or [
            "  (nothing)"
        ]
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
    engine: Engine, keystore: KeyStore, subject_id: str, *, role: str = DISCLOSING_ROLE
) -> SubjectReport:
    ref = keystore.subject_ref(subject_id)
    report = SubjectReport(ref)
    for value in Vault(engine).held(ref):
        shown = (
            reveal(keystore, value.event_id, ref, value.encrypted_value())
            if role == DISCLOSING_ROLE
            else "[hidden: only a privacy officer sees values]"
        )
        report.held.append(
            HeldCategory(
                value.category,
                shown,
                value.collected_at.isoformat(),
                value.channel,
                list(value.purposes),
            )
        )
    for entry in iter_records(engine, subject_ref=ref):
        record = entry.as_export()
        if record["kind"] in ("used", "shared"):
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
        elif record["kind"] == "consent_changed" and record["decision"] == "allow":
            report.consent[record["purpose"]] = bool(record["consent_granted"])
        elif record["kind"] == "deletion_requested" and record["erasure"]:
            report.erasure_requests.append(record["erasure"])
    for key in keystore.keys_of(ref):
        if key.shredded_at is not None and key.category != IDENTITY_CATEGORY:
            report.erased.append(
                ErasedCategory(
                    key.category, key.shred_reason or "shredded", key.shredded_at.isoformat()
                )
            )
    return report
