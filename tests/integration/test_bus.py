"""The bus end to end on the embedded broker: publisher -> customer.events -> worker."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import orjson
from confluent_kafka import Producer

from streams.codec import SingleObjectCodec
from streams.topics import CUSTOMER_EVENTS, DEAD_LETTERS, TOPICS

from fixtures.broker import REPO, Workers, audit_records, read_topic, run_cli

EXAMPLES = REPO / "examples" / "events.jsonl"
CODEC = SingleObjectCodec()


def plaintexts(path: Path) -> set[bytes]:
    """Every personal value and subject id in an input file."""
    found: set[bytes] = set()
    for line in path.read_text().splitlines():
        event = json.loads(line)
        found.add(event["subject_id"].encode())
        found.update(v.encode() for v in event.get("data", {}).values())
    return found


def all_bytes_on_the_bus(bootstrap: str) -> list[tuple[str, bytes]]:
    """(topic, bytes) for every key, value and header of every record on every topic."""
    from confluent_kafka.admin import AdminClient

    names = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    found = []
    for topic in names:
        for message in read_topic(bootstrap, topic):
            found.append((topic, message.key() or b""))
            found.append((topic, message.value() or b""))
            for name, value in message.headers() or []:
                found.append((topic, name.encode() + b"=" + (value or b"")))
    return found


def test_published_events_arrive_at_the_worker_decoded(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    worker = workers.start()
    published = run_cli(lifecycle_env, "publish", str(EXAMPLES))
    assert published.returncode == 0, published.stderr.decode()

    event_ids = [json.loads(line)["event_id"] for line in EXAMPLES.read_text().splitlines()]
    records = audit_records(broker, CODEC, len(event_ids))
    assert sorted(r["decision"]["event_id"] for r in records) == sorted(event_ids)
    assert worker.process.poll() is None


def test_no_plaintext_value_or_subject_id_on_any_topic(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    worker = workers.start()
    assert run_cli(lifecycle_env, "publish", str(EXAMPLES)).returncode == 0
    audit_records(broker, CODEC, 8)

    secrets = plaintexts(EXAMPLES)
    scanned = all_bytes_on_the_bus(broker)
    assert any(topic == CUSTOMER_EVENTS for topic, _ in scanned)
    leaks = [(topic, s) for topic, data in scanned for s in secrets if s in data]
    assert leaks == []
    assert not any(s.decode() in worker.log() for s in secrets)


def test_poison_records_are_dead_lettered_with_their_source_and_valid_ones_still_flow(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    workers.start()
    producer = Producer({"bootstrap.servers": broker})
    plain = orjson.dumps({"subject_id": "C-55555", "name": "Plain Text Person"})
    valid = run_cli(
        lifecycle_env, "publish", "-", stdin=EXAMPLES.read_text().splitlines()[1].encode() + b"\n"
    )
    assert valid.returncode == 0
    encoded = read_topic(broker, CUSTOMER_EVENTS, min_count=1)[0].value()
    decoded = CODEC.decode("lifecycle.CustomerEvent", encoded)
    mismatched = CODEC.encode("lifecycle.CustomerEvent", {**decoded, "kind": "deletion_requested"})
    poison = {
        "body does not match kind": mismatched,
        "not Avro": plain,
        "unknown schema fingerprint": encoded[:2] + b"\xff" * 8 + encoded[10:],
        "corrupt": encoded[:-7],
    }
    for value in poison.values():
        key = decoded["subject_ref"].encode() if value is mismatched else b"some-key"
        producer.produce(CUSTOMER_EVENTS, value, key, partition=0)
    producer.flush(10)
    run_cli(lifecycle_env, "publish", str(EXAMPLES))

    letters = read_topic(broker, DEAD_LETTERS, min_count=4, timeout=60)
    audit_records(broker, CODEC, 8)
    assert len(letters) == 4
    for letter in letters:
        headers = dict(letter.headers())
        assert headers["lifecycle.source.topic"] == CUSTOMER_EVENTS.encode()
        assert headers["lifecycle.source.partition"] == b"0"
        assert int(headers["lifecycle.source.offset"]) >= 0
        assert headers["lifecycle.error"]
        assert b"Plain Text Person" not in letter.value() and b"C-55555" not in letter.value()
    errors = sorted(dict(letter.headers())["lifecycle.error"].decode() for letter in letters)
    assert any("not an Avro single-object record" in e for e in errors)
    assert any("unknown schema fingerprint" in e for e in errors)
    assert any("corrupt" in e or "trailing" in e for e in errors)
    assert any("body does not match kind" in e for e in errors)
    offsets = sorted(int(dict(m.headers())["lifecycle.source.offset"]) for m in letters)
    assert len(set(offsets)) == 4


def test_bad_lines_are_refused_by_number_and_field_while_the_rest_is_published(
    lifecycle_env: dict[str, str], broker: str
) -> None:
    good = EXAMPLES.read_text().splitlines()
    lines = [
        good[0],
        '{"kind": "used", "subject_id": ',
        good[1],
        json.dumps({**json.loads(good[1]), "categories": ["emial"]}),
        good[2],
    ]
    result = run_cli(lifecycle_env, "publish", "-", stdin="\n".join(lines).encode())
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "line 2: (line): malformed JSON" in stderr
    assert "line 4: categories[0]: unknown category 'emial'" in stderr
    assert "published 3, refused 2" in stderr
    assert len(read_topic(broker, CUSTOMER_EVENTS, min_count=3)) == 3


def test_a_wrong_master_key_is_refused_before_anything_is_published(
    lifecycle_env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    assert run_cli(lifecycle_env, "publish", str(EXAMPLES)).returncode == 0
    wrong = {**lifecycle_env, "LIFECYCLE_MASTER_KEY_FILE": str(tmp_path / "another.key")}
    result = run_cli(wrong, "publish", str(EXAMPLES))
    assert result.returncode != 0
    assert "master key does not open this key store" in result.stderr.decode()
    worker = run_cli(wrong, "up", timeout=60)
    assert worker.returncode != 0
    assert "master key does not open this key store" in worker.stderr.decode()
    assert len(read_topic(broker, CUSTOMER_EVENTS)) == len(EXAMPLES.read_text().splitlines())


def test_topics_are_created_with_the_contract_configs(broker: str) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": broker})
    assert {t.name for t in TOPICS} <= set(admin.list_topics(timeout=10).topics)
    audit = admin.describe_configs([ConfigResource("topic", "privacy.audit")])
    config = {k: v.value for f in audit.values() for k, v in f.result().items()}
    assert config["cleanup.policy"] == "delete"
    assert config["retention.ms"] == "-1"


def test_a_worker_stops_cleanly_on_sigterm(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    worker = workers.start()
    assert run_cli(lifecycle_env, "publish", str(EXAMPLES)).returncode == 0
    audit_records(broker, CODEC, 8)
    assert worker.stop(signal.SIGTERM) == 0
