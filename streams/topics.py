"""The topics of the contract and the settings each must have (created and kept by
:mod:`streams.topic_admin`)."""

from __future__ import annotations

from dataclasses import dataclass, field

CUSTOMER_EVENTS = "customer.events"
DEAD_LETTERS = "customer.events.dlq"
DECISIONS = "privacy.decisions"
AUDIT = "privacy.audit"
VIOLATIONS = "privacy.violations"
CONFIRMATIONS = "privacy.deletion-confirmations"
KEY_REVOCATIONS = "privacy.key-revocations"
RETENTION_SWEEPS = "privacy.retention-sweeps"


_FOREVER = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitioned: bool
    """True: the configured partition count (keyed by subject_ref); False: one partition, so
    readers see one total order."""
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


TOPICS = (
    TopicSpec(CUSTOMER_EVENTS, True, {}, "every input event, key = subject_ref"),
    TopicSpec(DEAD_LETTERS, False, _FOREVER, "undecodable or invalid records, with source headers"),
    TopicSpec(DECISIONS, True, {}, "every decision, consumed by the audit ledger"),
    TopicSpec(AUDIT, False, _FOREVER, "the ledger: append-only, never compacted, never expiring"),
    TopicSpec(VIOLATIONS, False, _FOREVER, "every refused use, share or collection"),
    TopicSpec(CONFIRMATIONS, False, _FOREVER, "one record per finished erasure request"),
    TopicSpec(
        KEY_REVOCATIONS,
        False,
        _FOREVER,  # replayed after a key-store restore (lifecycle keys reshred)
        "destroyed data keys: every process drops its cache",
    ),
    TopicSpec(
        RETENTION_SWEEPS, True, {}, "retention sweep requests, one per partition of subjects"
    ),
)


def topic_config(spec: TopicSpec, replication: int | None) -> dict[str, str]:
    """The settings ``spec`` must have on a cluster that replicates ``replication`` times
    (None: the broker's default): its own, plus ``min.insync.replicas`` when replicated, so
    that ``acks=all`` means at least two copies (one with a replication factor of 2)."""
    config = dict(spec.config)
    if replication is not None and replication > 1:
        config["min.insync.replicas"] = str(min(replication - 1, 2))
    return config
