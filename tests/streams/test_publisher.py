"""The publisher's delivery guarantees: idempotent, acknowledged by all replicas, and loud when
the broker does not acknowledge a record."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from processors.policy import load_policies
from streams.broker import EmbeddedBroker, free_port
from streams.clients import producer_config
from streams.codec import SingleObjectCodec
from streams.exceptions import PublishError
from streams.keys import MemoryKeyStore
from streams.publisher import Publisher
from streams.topic_admin import apply_topics
from streams.topics import CUSTOMER_EVENTS

from fixtures.broker import REPO, read_topic, run_cli

VOCABULARY = load_policies(REPO / "policy").vocabulary()


def used(event_id: str) -> dict[str, object]:
    return {
        "kind": "used",
        "event_id": event_id,
        "source": "billing",
        "subject_id": "C-10042",
        "actor": {"id": "clerk-1", "role": "billing_clerk"},
        "categories": ["service_account"],
        "purpose": "billing",
    }


def test_the_producer_is_idempotent_and_waits_for_all_in_sync_replicas() -> None:
    config = producer_config({"bootstrap.servers": "127.0.0.1:1"})
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    Producer(config)  # librdkafka accepts the combination


def test_the_client_configuration_cannot_weaken_the_guarantees() -> None:
    config = producer_config(
        {"bootstrap.servers": "127.0.0.1:1", "acks": "1", "enable.idempotence": "false"}
    )
    assert config["enable.idempotence"] is True and config["acks"] == "all"


def test_a_record_the_broker_never_acknowledges_raises_publish_error_naming_it(
    tmp_path: Path,
) -> None:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as embedded:
        apply_topics({"bootstrap.servers": embedded.bootstrap}, 4)
        publisher = Publisher(
            {"bootstrap.servers": embedded.bootstrap},
            MemoryKeyStore(),
            SingleObjectCodec(),
            VOCABULARY,
            listen_for_revocations=False,
            delivery_timeout_ms=2_000,
        )
        publisher.publish(used("ev-1"))
        publisher.publish(used("ev-2"))
        assert publisher.flush() == 2
        assert len(read_topic(embedded.bootstrap, CUSTOMER_EVENTS)) == 2
        embedded.stop()  # the broker goes away

        publisher.publish(used("ev-3"))
        with pytest.raises(
            PublishError, match=r"1 records not delivered \(first: event_id ev-3: "
        ) as caught:
            publisher.flush()
    assert "timed out" in str(caught.value)
    assert "2 delivered" in str(caught.value)
    assert "C-10042" not in str(caught.value)


def test_lifecycle_publish_exits_non_zero_naming_the_failure_when_the_broker_is_gone(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
    env.update(
        KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",  # nothing listens there
        LIFECYCLE_DATA_DIR=str(tmp_path / "data"),
        LIFECYCLE_PUBLISH_TIMEOUT_MS="2000",
    )
    lines = orjson.dumps(used("ev-1")) + b"\n" + b'{"kind": "sold"}\n'

    done = run_cli(env, "publish", "-", stdin=lines, timeout=60)

    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "line 2: kind:" in stderr  # the refused line is still reported
    assert "error: publishing failed: 1 records not delivered (first: event_id ev-1:" in stderr
    assert "timed out" in stderr
    assert "Traceback" not in stderr and "C-10042" not in stderr
