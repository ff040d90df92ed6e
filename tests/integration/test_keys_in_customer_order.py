"""Keys follow the customer's order of events, on the running pipeline.

One customer's history (collections, a partial and a whole erasure, refused collections, later
collections of the same categories, a use) is published in one batch before any worker runs,
so every value is encrypted before any erasure or refusal is decided. Then a worker decides it
all: every value collected after an erasure or a refusal reads back (access report, decrypting
tail, any key), every value before it (and every refused one) reads ``[shredded]``, and no
erased value is anywhere in plaintext. The same with two publishers in turn, one of which
still has the old key cached; and a value another producer encrypted under a destroyed key is
refused ``value_unreadable``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from core.settings import load_settings
from lifecycle.runtime import Runtime
from streams.codec import SingleObjectCodec
from streams.envelope import SHREDDED, encrypt_value
from streams.keys import IDENTITY_CATEGORY
from streams.publisher import Publisher
from streams.topics import CONFIRMATIONS, CUSTOMER_EVENTS, VIOLATIONS

from fixtures.broker import Workers, audit_records, read_topic, run_cli
from integration.scenario import event, lines
from integration.test_bus import all_bytes_on_the_bus
from integration.test_erasure import SUBJECT, keystore_of, readable_values

CODEC = SingleObjectCodec()

BANKING = "ACCT-5550-7777-ORDER"  # retained by law through the whole erasure
FIRST = {"name": "Imani First-Name", "email": "first@example.org", "address": "1 First Road"}
EMAIL_AFTER_PARTIAL = "after.partial@example.org"  # erased again by the whole erasure
REFUSED_EMAIL = "refused.email@example.org"
TELEPHONE = "+1 868 555 0111"  # collected between the erasures
LATER = {"name": "Imani Later-Name", "email": "later@example.org", "address": "9 Later Road"}
REFUSED_NAME = "Refused Name-Copy"
RECTIFIED_NAME = "Imani Rectified-Name"


def collected(event_id: str, minute: int, purposes: list[str], **data: str) -> dict[str, Any]:
    return event(
        "collected", event_id, minute, "system", channel="web_form", purposes=purposes, data=data
    )


def erasure(event_id: str, minute: int, request_id: str, *categories: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"request_id": request_id}
    if categories:
        fields["categories"] = list(categories)
    return event("deletion_requested", event_id, minute, "privacy_officer", **fields)


NECESSARY = ["billing", "account_notices", "service_provision"]
HISTORY: list[tuple[dict[str, Any], str]] = [
    (collected("k01", 0, NECESSARY, **FIRST, banking=BANKING), "allowed"),
    (erasure("k02", 1, "REQ-PARTIAL", "email"), "allowed"),
    (collected("k03", 2, NECESSARY, email=EMAIL_AFTER_PARTIAL), "allowed"),
    (collected("k04", 3, ["sale"], email=REFUSED_EMAIL), "purpose_not_permitted"),
    (collected("k05", 4, NECESSARY, telephone=TELEPHONE), "allowed"),
    (erasure("k06", 5, "REQ-WHOLE"), "allowed"),
    (collected("k07", 6, NECESSARY, **LATER), "allowed"),
    (collected("k08", 7, ["data_brokerage"], name=REFUSED_NAME), "purpose_not_permitted"),
    (collected("k09", 8, NECESSARY, name=RECTIFIED_NAME), "allowed"),
    (
        event("used", "k10", 9, "customer_service", categories=["email"], purpose="billing"),
        "allowed",
    ),
]
GONE = {
    *FIRST.values(),
    EMAIL_AFTER_PARTIAL,
    REFUSED_EMAIL,
    TELEPHONE,
    REFUSED_NAME,
}
"""Every value collected before an erasure that covers it, and every refused one."""
HELD = {
    "name": RECTIFIED_NAME,
    "email": LATER["email"],
    "address": LATER["address"],
    "banking": BANKING,
}
"""What the customer holds at the end: what came after the erasures, and what the law keeps."""
ON_THE_TOPIC = {  # event_id -> category -> what any reader shows for its copy
    "k01": {
        "name": SHREDDED,
        "email": SHREDDED,
        "address": SHREDDED,
        "banking": BANKING,
        "subject_id": SUBJECT,
    },
    "k03": {"email": SHREDDED, "subject_id": SUBJECT},
    "k04": {"email": SHREDDED, "subject_id": SUBJECT},
    "k05": {"telephone": SHREDDED, "subject_id": SUBJECT},
    "k07": {**LATER, "subject_id": SUBJECT},
    "k08": {"name": SHREDDED, "subject_id": SUBJECT},
    "k09": {"name": RECTIFIED_NAME, "subject_id": SUBJECT},
}


def decided_in_order(broker: str, count: int) -> dict[str, dict[str, Any]]:
    return {r["decision"]["event_id"]: r["decision"] for r in audit_records(broker, CODEC, count)}


def tail_values(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """event_id -> category -> what ``events tail --decrypt`` shows (subject_id included)."""
    result = run_cli(env, "events", "tail", "--decrypt", "--subject", SUBJECT, "--json")
    assert result.returncode == 0, result.stderr.decode()
    shown: dict[str, dict[str, str]] = {}
    for line in result.stdout.decode().splitlines():
        record = json.loads(line)
        values = {"subject_id": record["subject"]["value"]}
        values.update({v["category"]: v["value"] for v in record.get("data", [])})
        shown[record["event_id"]] = values
    return shown


def report(env: dict[str, str]) -> dict[str, Any]:
    result = run_cli(env, "subject", "report", SUBJECT, "--json")
    assert result.returncode == 0, result.stderr.decode()
    return dict(json.loads(result.stdout))


def confirmations(broker: str, count: int) -> dict[str, dict[str, Any]]:
    found = read_topic(broker, CONFIRMATIONS, min_count=count, timeout=60)
    decoded = [CODEC.decode("lifecycle.DeletionConfirmation", m.value()) for m in found]
    return {c["request_id"]: c for c in decoded}


def assert_history_decided_in_order(env: dict[str, str], broker: str, tmp_path: Path) -> None:
    """What the whole history must leave behind, however it was published."""
    decisions = decided_in_order(broker, len(HISTORY))
    assert [(e["event_id"], decisions[e["event_id"]]["reason_code"]) for e, _ in HISTORY] == [
        (e["event_id"], reason) for e, reason in HISTORY
    ]
    answered = confirmations(broker, 2)
    assert answered["REQ-PARTIAL"]["shredded_categories"] == ["email"]
    assert set(answered["REQ-WHOLE"]["shredded_categories"]) == {
        "name",
        "email",
        "address",
        "telephone",
    }
    assert [r["category"] for r in answered["REQ-WHOLE"]["retained_categories"]] == ["banking"]

    # the access report: what came after each erasure and refusal reads back
    shown = report(env)
    assert {h["category"]: h["value"] for h in shown["held"]} == HELD
    uses = [(u["kind"], u["categories"], u["decision"]) for u in shown["uses"]]
    assert uses == [("used", ["email"], "allow")]

    # every copy on the topic: the decrypting tail agrees with the ledger on what is held
    assert tail_values(env) == {
        **ON_THE_TOPIC,
        "k02": {"subject_id": SUBJECT},
        "k06": {"subject_id": SUBJECT},  # the request itself: who asked stays while data is kept
        "k10": {"subject_id": SUBJECT},
    }

    # no key in the store opens an erased or refused value, on any copy
    ref = keystore_of(env).subject_ref(SUBJECT)
    readable = readable_values(broker, env, ref)
    assert not GONE & set().union(*readable.values())
    assert readable["email"] == {LATER["email"]}
    assert readable["name"] == {LATER["name"], RECTIFIED_NAME}  # k07's copy: before nothing

    # and none of them in plaintext anywhere: topics (changelogs, dead letters), database
    # files, what the worker and the command line printed
    secrets = [value.encode() for value in GONE]
    on_bus = all_bytes_on_the_bus(broker)
    assert any(topic.endswith("-changelog") for topic, _ in on_bus)
    assert [topic for topic, data in on_bus if any(s in data for s in secrets)] == []
    data_dir = Path(env["LIFECYCLE_DATA_DIR"])
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert [p.name for p in files if any(s in p.read_bytes() for s in secrets)] == []
    logs = [p for p in tmp_path.glob("*.log")]
    assert logs and [p.name for p in logs if any(s in p.read_bytes() for s in secrets)] == []


def test_a_history_published_before_any_worker_runs_keeps_what_came_after_each_erasure(
    workers: Workers, lifecycle_env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    published = run_cli(lifecycle_env, "publish", "-", stdin=lines([e for e, _ in HISTORY]))
    assert published.returncode == 0, published.stderr.decode()
    assert "published 10, refused 0" in published.stderr.decode()
    requests = {
        record["event_id"]: record["body"]
        for m in read_topic(broker, CUSTOMER_EVENTS)
        for record in [CODEC.decode("lifecycle.CustomerEvent", m.value())]
        if record["kind"] == "deletion_requested"
    }
    # each request names the versions it ends; the whole one every category, subject_id too
    assert set(requests["k02"]["key_versions_ended"]) == {"email", IDENTITY_CATEGORY}
    assert {"name", "telephone", "fax", IDENTITY_CATEGORY} <= set(
        requests["k06"]["key_versions_ended"]
    )

    workers.start()

    assert_history_decided_in_order(lifecycle_env, broker, tmp_path)


@pytest.fixture
def two_publishers(lifecycle_env: dict[str, str]) -> Iterator[list[Publisher]]:
    """Two long-running publishers, each with its own key store and cache (as two upstream
    systems' processes), listening for revocations."""
    settings = load_settings(lifecycle_env)
    started = []
    for _ in range(2):
        runtime = Runtime(settings).open()
        started.append(runtime.publisher())
    yield started
    for publisher in started:
        publisher.close()


def test_with_two_publishers_one_holding_the_old_key_in_its_cache(
    workers: Workers,
    lifecycle_env: dict[str, str],
    broker: str,
    tmp_path: Path,
    two_publishers: list[Publisher],
) -> None:
    """Publisher ``billing`` encrypts the first collection (so it caches the customer's keys),
    publisher ``crm`` then publishes the erasure requests; ``billing`` publishes what follows
    each request, after ``crm`` returned. Billing's revocation listener is slow (it applies
    each record two seconds late), so billing still has the ended key in its cache when it
    starts: it must wait for the listener rather than use it."""
    billing, crm = two_publishers
    keys = billing._keys
    ref = keys.subject_ref(SUBJECT)
    forget = keys.forget

    def late_forget(subject_ref: str, categories: Any = None) -> None:
        if threading.current_thread().name == "key-revocations":
            time.sleep(2)
        forget(subject_ref, categories)

    keys.forget = late_forget  # type: ignore[method-assign]
    by = {"k02": crm, "k04": crm, "k06": crm, "k08": crm}  # requests, and refusals, by crm
    cached_before: dict[str, int] = {}
    for record, _ in HISTORY:
        publisher = by.get(record["event_id"], billing)
        if record["event_id"] in ("k03", "k07"):  # billing's first event after a request
            cached = keys._cache.current(ref, "email")  # type: ignore[attr-defined]
            assert cached is not None  # the version the request ended is still cached
            cached_before[record["event_id"]] = cached[0]
        report_ = publisher.publish_lines([json.dumps(record)])
        assert report_.ok
    versions = {
        record["event_id"]: {v["category"]: v["key_version"] for v in record["body"]["data"]}
        for m in read_topic(broker, CUSTOMER_EVENTS)
        for record in [CODEC.decode("lifecycle.CustomerEvent", m.value())]
        if record["kind"] == "collected"
    }
    assert versions["k03"]["email"] > cached_before["k03"]
    assert versions["k07"]["email"] > cached_before["k07"]

    workers.start()

    assert_history_decided_in_order(lifecycle_env, broker, tmp_path)


# --------------------------------------------------------------------------- another producer


def foreign_collection(
    env: dict[str, str], event_id: str, minute: int, sealed: dict[str, Any]
) -> bytes:
    """A collection as a producer that is not ours might send it: ``sealed`` as the value."""
    keystore = keystore_of(env)
    ref = keystore.subject_ref(SUBJECT)
    identity = keystore.encryption_keys([(ref, IDENTITY_CATEGORY)])[(ref, IDENTITY_CATEGORY)]
    source = event("collected", event_id, minute, "system")
    record = {
        "event_id": event_id,
        "kind": "collected",
        "occurred_at": _instant(source["occurred_at"]),
        "published_at": _instant(source["occurred_at"]),
        "source": "partner-system",
        "subject_ref": ref,
        "subject": encrypt_value(identity, event_id, SUBJECT),
        "actor": {"id": "partner", "role": "system"},
        "body": (
            "lifecycle.Collected",
            {"channel": "web_form", "purposes": NECESSARY, "data": [sealed]},
        ),
    }
    return CODEC.encode("lifecycle.CustomerEvent", record, CUSTOMER_EVENTS)


def _instant(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


def test_a_value_another_producer_encrypted_under_a_destroyed_key_is_refused_value_unreadable(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    # the other producer signs nothing: the workers let it through as during a rollout
    workers.start(LIFECYCLE_AUTH_MODE="permit")
    refused_first = collected("f01", 0, ["sale"], email=REFUSED_EMAIL)
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines([refused_first])).returncode == 0
    assert decided_in_order(broker, 1)["f01"]["reason_code"] == "purpose_not_permitted"
    keystore = keystore_of(lifecycle_env)
    ref = keystore.subject_ref(SUBJECT)
    (destroyed,) = [
        k
        for k in keystore.keys_of(ref)
        if k.category == "email" and k.shred_reason == "purpose_not_permitted"
    ]
    live_name = keystore.encryption_keys([(ref, "name")])[(ref, "name")]
    tampered = encrypt_value(live_name, "f04", "Partner Name")
    tampered["ciphertext"] = bytes([tampered["ciphertext"][0] ^ 1]) + tampered["ciphertext"][1:]
    foreign = [
        foreign_collection(  # under the key the refusal destroyed
            lifecycle_env,
            "f02",
            1,
            {
                "category": "email",
                "key_version": destroyed.version,
                "nonce": b"\x00" * 12,
                "ciphertext": b"\x01" * 40,
            },
        ),
        foreign_collection(  # under a version this key store never made
            lifecycle_env,
            "f03",
            2,
            {"category": "telephone", "key_version": 99, "nonce": b"\x00" * 12, "ciphertext": b"x"},
        ),
        foreign_collection(lifecycle_env, "f04", 3, tampered),  # a live key, altered bytes
    ]
    producer = Producer({"bootstrap.servers": broker, "partitioner": "murmur2_random"})
    for value in foreign:
        producer.produce(CUSTOMER_EVENTS, value, ref.encode())
    assert producer.flush(10) == 0
    uses = [
        event("used", "f05", 4, "customer_service", categories=["email"], purpose="billing"),
        event("used", "f06", 5, "customer_service", categories=["name"], purpose="billing"),
    ]
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(uses)).returncode == 0

    decisions = decided_in_order(broker, 6)

    for event_id in ("f02", "f03", "f04"):
        assert (decisions[event_id]["decision"], decisions[event_id]["reason_code"]) == (
            "deny",
            "value_unreadable",
        )
    assert "key version 99" in decisions["f03"]["rule"]
    assert "fails authentication" in decisions["f04"]["rule"]
    assert "[RETENTION OF DATA]" in decisions["f02"]["rule"]
    assert decisions["f05"]["reason_code"] == "not_collected"  # nothing readable was held
    assert decisions["f06"]["reason_code"] == "not_collected"
    violations = [
        CODEC.decode("lifecycle.Decision", m.value())
        for m in read_topic(broker, VIOLATIONS, min_count=6)
    ]
    assert {v["event_id"] for v in violations if v["reason_code"] == "value_unreadable"} == {
        "f02",
        "f03",
        "f04",
    }
    assert report(lifecycle_env)["held"] == []
    # the altered value needed no key destroyed: the current name key lives on
    (name_key,) = [k for k in keystore.keys_of(ref) if k.category == "name"]
    assert name_key.version == live_name.version and name_key.shredded_at is None


# --------------------------------------------------------------------------- a refusal not foreseen


def test_a_refusal_the_publisher_did_not_foresee_keeps_the_held_value_readable_everywhere(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    """A publisher without the policy (another producer's, or one whose policy file is older)
    encrypts a refused collection under the current key, which the customer's held value and a
    correction in flight share. The worker moves the held value to a key version of its own
    before destroying that key: the report and the decrypting tail still show it; the
    correction, whose value can no longer be read, is refused ``value_unreadable``."""
    settings = load_settings(lifecycle_env)
    runtime = Runtime(settings).open()
    unscreened = runtime.publisher(screen=None)
    history = [
        collected("u01", 0, NECESSARY, email=FIRST["email"]),
        collected("u02", 1, ["sale"], email=REFUSED_EMAIL),
        collected("u03", 2, NECESSARY, email=LATER["email"]),
        event("used", "u04", 3, "customer_service", categories=["email"], purpose="billing"),
    ]
    try:
        assert unscreened.publish_lines([json.dumps(e) for e in history]).ok
    finally:
        unscreened.close()
    workers.start()

    decisions = decided_in_order(broker, len(history))

    assert [decisions[e["event_id"]]["reason_code"] for e in history] == [
        "allowed",
        "purpose_not_permitted",
        "value_unreadable",
        "allowed",  # the held value: u01's, readable
    ]
    assert {h["category"]: h["value"] for h in report(lifecycle_env)["held"]} == {
        "email": FIRST["email"]
    }
    shown = tail_values(lifecycle_env)
    assert shown["u01"]["email"] == FIRST["email"]  # the vault's re-encrypted copy
    assert shown["u02"]["email"] == SHREDDED
    assert shown["u03"]["email"] == SHREDDED
    ref = keystore_of(lifecycle_env).subject_ref(SUBJECT)
    assert readable_values(broker, lifecycle_env, ref).get("email", set()) == set()
