"""`lifecycle topics apply` on the real broker: creates, checks and corrects the contract's
topics, and says clearly what it cannot correct."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.broker import EmbeddedBroker
from streams.topics import AUDIT, CUSTOMER_EVENTS, KEY_REVOCATIONS, TOPICS, topic_config

from fixtures.broker import run_cli


@pytest.fixture
def bare_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own with no topics yet."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as embedded:
        yield embedded.bootstrap


@pytest.fixture
def env(tmp_path: Path, bare_broker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
    env.update(KAFKA_BOOTSTRAP=bare_broker, LIFECYCLE_DATA_DIR=str(tmp_path / "data"))
    return env


def apply(env: dict[str, str], *args: str) -> tuple[int, dict[str, str], str]:
    done = run_cli(env, "topics", "apply", *args, timeout=120)
    lines = done.stdout.decode().splitlines()
    states = dict(line.split(": ", 1) for line in lines)
    return done.returncode, states, done.stderr.decode()


def precreate(bootstrap: str, topic: NewTopic) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer
    for future in admin.create_topics([topic]).values():
        future.result(10)


def configs_of(bootstrap: str, name: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_configs([ConfigResource("topic", name)])
    return {k: v.value for f in described.values() for k, v in f.result(10).items()}


def test_topics_apply_twice_creates_then_has_nothing_to_change(env: dict[str, str]) -> None:
    code, first, _ = apply(env)
    assert code == 0
    assert set(first) == {spec.name for spec in TOPICS}
    assert first[CUSTOMER_EVENTS] == "created (4 partitions)"
    assert first[AUDIT] == "created (1 partitions)"

    code, second, stderr = apply(env)

    assert code == 0, stderr
    assert set(second.values()) == {"unchanged"}
    assert "nothing to change" in stderr


def test_a_compacted_expiring_privacy_audit_is_corrected_in_place(
    env: dict[str, str], bare_broker: str
) -> None:
    wrong = {"cleanup.policy": "compact", "retention.ms": "86400000"}
    precreate(bare_broker, NewTopic(AUDIT, num_partitions=1, replication_factor=1, config=wrong))

    code, states, stderr = apply(env)

    assert code == 0, stderr
    assert states[AUDIT] == (
        "set cleanup.policy=delete (was compact), retention.ms=-1 (was 86400000), "
        "retention.bytes=-1 (was unset)"
    )
    config = configs_of(bare_broker, AUDIT)
    assert config["cleanup.policy"] == "delete"
    assert config["retention.ms"] == "-1" and config["retention.bytes"] == "-1"
    assert apply(env)[1][AUDIT] == "unchanged"


def test_partition_counts_that_cannot_be_fixed_here_fail_naming_topic_and_counts(
    env: dict[str, str], bare_broker: str
) -> None:
    precreate(bare_broker, NewTopic(CUSTOMER_EVENTS, num_partitions=2, replication_factor=1))
    precreate(bare_broker, NewTopic(AUDIT, num_partitions=3, replication_factor=1))

    code, states, stderr = apply(env)

    assert code != 0
    assert "customer.events: 2 partitions, 4 configured" in stderr
    assert "--grow-partitions" in stderr
    assert "privacy.audit: 3 partitions, it must have 1" in stderr
    assert states["privacy.violations"] == "created (1 partitions)"  # the rest was still done
    assert "Traceback" not in stderr


def test_growing_partitions_is_refused_by_the_embedded_broker_and_says_so(
    env: dict[str, str], bare_broker: str
) -> None:
    precreate(bare_broker, NewTopic(CUSTOMER_EVENTS, num_partitions=2, replication_factor=1))

    code, _, stderr = apply(env, "--grow-partitions")

    assert code != 0
    assert "customer.events: the broker refused to grow it from 2 to 4 partitions" in stderr
    assert "CreatePartitions" in stderr  # tansu 0.6 does not implement it


def test_too_many_partitions_on_a_keyed_topic_names_the_setting_to_change(
    env: dict[str, str], bare_broker: str
) -> None:
    precreate(bare_broker, NewTopic(CUSTOMER_EVENTS, num_partitions=6, replication_factor=1))

    code, _, stderr = apply(env)

    assert code != 0
    assert "customer.events: 6 partitions, 4 configured" in stderr
    assert "LIFECYCLE_PARTITIONS=6" in stderr


def test_replicated_topics_require_two_in_sync_copies() -> None:
    audit = next(spec for spec in TOPICS if spec.name == AUDIT)
    assert topic_config(audit, 3)["min.insync.replicas"] == "2"
    assert topic_config(audit, 2)["min.insync.replicas"] == "1"
    assert "min.insync.replicas" not in topic_config(audit, 1)
    assert "min.insync.replicas" not in topic_config(audit, None)  # the broker's default
    assert topic_config(audit, 3)["retention.ms"] == "-1"


def test_an_erasure_published_before_topics_apply_makes_a_one_partition_revocations_topic(
    env: dict[str, str], bare_broker: str
) -> None:
    """The publisher's key rotation is the first write to privacy.key-revocations when no
    worker has applied the topics yet: the broker must not make it with its default count."""
    request = b'{"kind": "deletion_requested", "subject_id": "C-1", "source": "crm", '
    request += b'"actor": {"id": "po", "role": "privacy_officer"}, "request_id": "REQ-1"}\n'

    published = run_cli(env, "publish", "-", stdin=request)

    assert published.returncode == 0, published.stderr.decode()
    topics = AdminClient({"bootstrap.servers": bare_broker}).list_topics(timeout=10).topics
    assert len(topics[KEY_REVOCATIONS].partitions) == 1
    assert configs_of(bare_broker, KEY_REVOCATIONS)["retention.ms"] == "-1"
    code, states, stderr = apply(env)
    assert code == 0, stderr
    assert states[KEY_REVOCATIONS] == "unchanged"
