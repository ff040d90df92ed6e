"""The topics of the contract and their configuration, created idempotently on any cluster."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.exceptions import BrokerError

CUSTOMER_EVENTS = "customer.events"
DEAD_LETTERS = "customer.events.dlq"
DECISIONS = "privacy.decisions"
AUDIT = "privacy.audit"
VIOLATIONS = "privacy.violations"
CONFIRMATIONS = "privacy.deletion-confirmations"
KEY_REVOCATIONS = "privacy.key-revocations"
RETENTION_SWEEPS = "privacy.retention-sweeps"


def home_partition(key: bytes, partitions: int) -> int:
    """The partition a keyed record belongs on: murmur2 of the key bytes, as the publisher,
    the Java client and Faust's tables compute it (so a subject's events and state meet)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


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


def apply_topics(
    client_config: Mapping[str, str | int | float | bool],
    partitions: int,
    replication: int = 1,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create missing topics (existing ones are left as they are); returns name -> outcome."""
    admin = AdminClient(dict(client_config))
    new = [
        NewTopic(
            spec.name,
            num_partitions=partitions if spec.partitioned else 1,
            replication_factor=replication,
            config=spec.config,
        )
        for spec in TOPICS
    ]
    outcome: dict[str, str] = {}
    for name, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            outcome[name] = "created"
        except Exception as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"
            else:
                raise BrokerError(f"could not create topic {name}: {exc}") from exc
    return outcome
