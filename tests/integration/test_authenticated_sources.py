"""Authenticated sources on the running pipeline: a producer that can write to the bus cannot
erase a customer, withdraw consent or claim a role; a registered source can only do what it is
registered for; a rotated secret works at once and the old one stops after its grace period.

Each test runs a real worker (``lifecycle up``) on the embedded broker, publishes through
``lifecycle publish`` as a source holding a token printed by ``lifecycle sources add``, and
plays the attacker with a plain confluent-kafka producer."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from core.db import make_engine
from core.settings import load_settings
from streams.codec import SingleObjectCodec
from streams.keys import open_keystore
from streams.sourceauth import SourceCredential, seal
from streams.topics import CONFIRMATIONS, CUSTOMER_EVENTS, DECISIONS, RETENTION_SWEEPS

from fixtures.broker import Workers, read_topic, run_cli
from integration.scenario import PERSONAL, event, lines

CODEC = SingleObjectCodec()
VICTIM = "C-81001"
OTHER = "C-81002"


def keystore_of(env: dict[str, str]) -> Any:
    settings = load_settings(env)
    return open_keystore(make_engine(settings.db_url), settings.master_key_file)


def collected(event_id: str, subject: str, minute: int = 0) -> dict[str, Any]:
    return event(
        "collected",
        event_id,
        minute,
        "system",
        subject=subject,
        channel="web_form",
        purposes=["billing", "account_notices", "service_provision"],
        data={k: PERSONAL[k] for k in ("name", "email", "address")},
    )


def used(
    event_id: str, subject: str, role: str = "customer_service", **extra: Any
) -> dict[str, Any]:
    return (
        event(
            "used",
            event_id,
            5,
            role,
            subject=subject,
            categories=["email"],
            purpose="account_notices",
        )
        | extra
    )


def erasure(event_id: str, subject: str, source: str = "crm") -> dict[str, Any]:
    return event(
        "deletion_requested",
        event_id,
        6,
        "privacy_officer",
        subject=subject,
        request_id=f"REQ-{event_id}",
    ) | {"source": source}


def publish(env: dict[str, str], events: list[dict[str, Any]]) -> None:
    result = run_cli(env, "publish", "-", stdin=lines(events))
    assert result.returncode == 0, result.stderr.decode()[-2000:]


def register(env: dict[str, str], name: str, *options: str) -> str:
    """``lifecycle sources add``; the token it printed (stdout's only line)."""
    result = run_cli(env, "sources", "add", name, *options)
    assert result.returncode == 0, result.stderr.decode()
    token = result.stdout.decode().strip()
    assert token.startswith(f"lcs1:{name}:") and "\n" not in token
    return token


def as_source(env: dict[str, str], tmp: Path, token: str) -> dict[str, str]:
    """``env`` for a publisher holding only ``token`` (a secret file of mode 0600)."""
    path = tmp / f"secret-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return {**env, "LIFECYCLE_SOURCE_SECRET_FILE": str(path)}


def decisions(bootstrap: str, event_ids: set[str], timeout: float = 60.0) -> dict[str, Any]:
    """event_id -> its decision, once every one of ``event_ids`` is decided."""
    found: dict[str, Any] = {}

    def enough(messages: list[Any]) -> bool:
        for message in messages:
            record = CODEC.decode("lifecycle.Decision", message.value())
            if record["event_id"] in event_ids:
                found[record["event_id"]] = record
        return set(found) == event_ids

    read_topic(bootstrap, DECISIONS, until=enough, timeout=timeout)
    return found


def ledger(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """event_id -> its ledger record (``lifecycle audit export``)."""
    result = run_cli(env, "audit", "export", "--format", "jsonl")
    assert result.returncode == 0, result.stderr.decode()
    return {r["event_id"]: r for r in map(json.loads, result.stdout.decode().splitlines())}


def confirmations(bootstrap: str) -> list[dict[str, Any]]:
    return [
        CODEC.decode("lifecycle.DeletionConfirmation", m.value())
        for m in read_topic(bootstrap, CONFIRMATIONS)
    ]


def live_keys(env: dict[str, str], subject: str) -> list[str]:
    keystore = keystore_of(env)
    return sorted(
        k.category for k in keystore.keys_of(keystore.subject_ref(subject)) if k.shredded_at is None
    )


def produce_raw(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key, value in records:
        if topic == RETENTION_SWEEPS:
            for partition in range(4):
                producer.produce(topic, value, key, partition=partition)
        else:
            producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def genuine_record(bootstrap: str, event_id: str) -> tuple[bytes, dict[str, Any]]:
    """(key, decoded record) of a published event, read back from customer.events."""
    for message in read_topic(bootstrap, CUSTOMER_EVENTS):
        record = CODEC.decode("lifecycle.CustomerEvent", message.value())
        if record["event_id"] == event_id:
            return message.key(), record
    raise AssertionError(f"{event_id} is not on {CUSTOMER_EVENTS}")


def settle_with_a_genuine_erasure(env: dict[str, str], bootstrap: str, event_id: str) -> None:
    """An erasure the worker carries out, after everything produced so far: once its
    confirmation is out, every earlier record on the (ordered) confirmations topic is too."""
    publish(env, [collected(f"{event_id}-c", OTHER, 7), erasure(event_id, OTHER)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(c["request_id"] == f"REQ-{event_id}" for c in confirmations(bootstrap)):
            return
        time.sleep(0.5)
    raise AssertionError(f"no confirmation for REQ-{event_id}")


@pytest.fixture
def pipeline(workers: Workers, lifecycle_env: dict[str, str], broker: str) -> dict[str, str]:
    workers.start()
    publish(lifecycle_env, [collected("v-collected", VICTIM)])
    decisions(broker, {"v-collected"})
    return lifecycle_env


def test_a_copied_collection_relabelled_as_an_erasure_is_refused_and_changes_nothing(
    pipeline: dict[str, str], broker: str
) -> None:
    """The attack: read a customer's ``collected`` record, decode it with the schemas, make it
    a privacy officer's erasure request with a new event id, and produce it back, raw, under
    the same key: once keeping the original MAC, once without any."""
    keys_before = live_keys(pipeline, VICTIM)
    assert {"name", "email", "address", "subject_id"} <= set(keys_before)
    key, record = genuine_record(broker, "v-collected")
    assert record["auth"] is not None and record["auth"]["source"] == "crm"
    forged = []
    for name, auth in (("forged-mac", record["auth"]), ("forged-nomac", None)):
        relabelled = {
            **record,
            "event_id": name,
            "kind": "deletion_requested",
            "actor": {"id": "intruder", "role": "privacy_officer"},
            "body": (
                "lifecycle.DeletionRequested",
                {"request_id": f"FORGED-{name}", "categories": None},
            ),
            "auth": auth,
        }
        forged.append((key, CODEC.encode("lifecycle.CustomerEvent", relabelled)))
    produce_raw(broker, CUSTOMER_EVENTS, forged)

    decided = decisions(broker, {"forged-mac", "forged-nomac"})
    for name in ("forged-mac", "forged-nomac"):
        assert decided[name]["decision"] == "deny"
        assert decided[name]["reason_code"] == "source_unauthenticated"
        assert "PROTECTION OF CUSTOMER'S PERSONAL INFORMATION" in decided[name]["rule"]
    assert "MAC does not match" in decided["forged-mac"]["rule"]
    assert "carries no source MAC" in decided["forged-nomac"]["rule"]
    violations = {
        CODEC.decode("lifecycle.Decision", m.value())["event_id"]
        for m in read_topic(broker, "privacy.violations")
    }
    assert {"forged-mac", "forged-nomac"} <= violations

    settle_with_a_genuine_erasure(pipeline, broker, "settle-1")
    requests = {c["request_id"] for c in confirmations(broker)}
    assert not {"FORGED-forged-mac", "FORGED-forged-nomac"} & requests
    assert live_keys(pipeline, VICTIM) == keys_before
    recorded = ledger(pipeline)
    assert recorded["forged-mac"]["reason_code"] == "source_unauthenticated"
    assert recorded["forged-nomac"]["decision"] == "deny"
    # the customer's data is still usable: the state did not change either
    publish(pipeline, [used("v-used", VICTIM)])
    assert decisions(broker, {"v-used"})["v-used"]["reason_code"] == "allowed"


def test_a_registered_source_may_only_assert_its_roles_and_file_what_it_is_registered_for(
    pipeline: dict[str, str], broker: str, tmp_path: Path
) -> None:
    meter = as_source(
        pipeline, tmp_path, register(pipeline, "meter", "--roles", "field_technician")
    )
    publish(
        meter,
        [
            erasure("m-erase", VICTIM, source="meter")
            | {"actor": {"id": "t", "role": "field_technician"}},
            used("m-role", VICTIM, role="billing_clerk", source="meter"),
            event(
                "consent_changed",
                "m-consent",
                8,
                "field_technician",
                subject=VICTIM,
                purpose="service_information",
                granted=False,
            )
            | {"source": "meter"},
            used("m-ok", VICTIM, role="field_technician", source="meter")
            | {"categories": ["address"], "purpose": "service_provision"},
        ],
    )
    decided = decisions(broker, {"m-erase", "m-role", "m-consent", "m-ok"})
    assert decided["m-erase"]["reason_code"] == "source_not_authorized"
    assert "not registered to file erasure" in decided["m-erase"]["rule"]
    assert decided["m-role"]["reason_code"] == "source_not_authorized"
    assert "not registered to act as 'billing_clerk'" in decided["m-role"]["rule"]
    assert decided["m-consent"]["reason_code"] == "source_not_authorized"
    assert decided["m-ok"]["reason_code"] == "allowed"

    settle_with_a_genuine_erasure(pipeline, broker, "settle-2")
    assert "REQ-m-erase" not in {c["request_id"] for c in confirmations(broker)}
    assert {"name", "email", "address", "subject_id"} <= set(live_keys(pipeline, VICTIM))
    # the refused withdrawal changed no consent: a consent-based use is still allowed
    publish(
        pipeline,
        [
            used("v-info", VICTIM, role="marketing")
            | {"categories": ["email"], "purpose": "service_information"}
        ],
    )
    assert decisions(broker, {"v-info"})["v-info"]["reason_code"] == "allowed"
    recorded = ledger(pipeline)
    assert {recorded[e]["reason_code"] for e in ("m-erase", "m-role", "m-consent")} == {
        "source_not_authorized"
    }


def test_a_source_registered_for_erasures_files_one_that_is_carried_out(
    pipeline: dict[str, str], broker: str, tmp_path: Path
) -> None:
    token = register(
        pipeline, "crm2", "--roles", "customer_service,privacy_officer", "--destructive", "erasure"
    )
    crm2 = as_source(pipeline, tmp_path, token)
    publish(crm2, [erasure("crm2-erase", VICTIM, source="crm2")])
    decided = decisions(broker, {"crm2-erase"})["crm2-erase"]
    assert (decided["decision"], decided["reason_code"]) == ("allow", "allowed")
    deadline = time.monotonic() + 60
    while not any(c["request_id"] == "REQ-crm2-erase" for c in confirmations(broker)):
        assert time.monotonic() < deadline, "no confirmation"
        time.sleep(0.5)
    assert live_keys(pipeline, VICTIM) == []


def test_lifecycle_erase_files_for_the_named_officer_as_the_cli_source(
    pipeline: dict[str, str], broker: str
) -> None:
    result = run_cli(pipeline, "erase", VICTIM, "--officer", "po-anna", "--wait", "--timeout", "60")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["status"] == "completed"
    requests = [
        CODEC.decode("lifecycle.CustomerEvent", m.value())
        for m in read_topic(broker, CUSTOMER_EVENTS)
    ]
    filed = [r for r in requests if r["kind"] == "deletion_requested"]
    assert [(r["source"], r["actor"]["id"], r["auth"]["source"]) for r in filed] == [
        ("cli", "po-anna", "cli")
    ]


def test_a_rotated_secret_works_at_once_and_the_old_one_is_refused_after_its_grace(
    pipeline: dict[str, str], broker: str, tmp_path: Path
) -> None:
    old = as_source(pipeline, tmp_path, register(pipeline, "meter", "--roles", "customer_service"))
    publish(old, [used("r-before", VICTIM, source="meter")])
    grace = 30.0
    rotated = run_cli(pipeline, "sources", "rotate", "meter", "--grace", f"{grace:.0f}s")
    rotated_at = time.monotonic()
    assert rotated.returncode == 0, rotated.stderr.decode()
    new_token = rotated.stdout.decode().strip()
    assert new_token.startswith("lcs1:meter:2:")
    new = as_source(pipeline, tmp_path, new_token)
    publish(new, [used("r-new", VICTIM, source="meter")])
    publish(old, [used("r-old-in-grace", VICTIM, source="meter")])
    in_grace = decisions(broker, {"r-before", "r-new", "r-old-in-grace"})
    assert time.monotonic() - rotated_at < grace, "too slow to test the grace period"
    assert {e: d["reason_code"] for e, d in in_grace.items()} == {
        "r-before": "allowed",
        "r-new": "allowed",
        "r-old-in-grace": "allowed",
    }

    time.sleep(max(0.0, rotated_at + grace + 1 - time.monotonic()))  # the grace period ends
    publish(old, [used("r-old-late", VICTIM, source="meter")])
    publish(new, [used("r-new-late", VICTIM, source="meter")])
    late = decisions(broker, {"r-old-late", "r-new-late"})
    assert late["r-old-late"]["reason_code"] == "source_unauthenticated"
    assert "secret version 1 of source meter was retired" in late["r-old-late"]["rule"]
    assert late["r-new-late"]["reason_code"] == "allowed"

    listed = run_cli(pipeline, "sources", "list", "--json")
    meter = next(
        json.loads(line) for line in listed.stdout.decode().splitlines() if '"meter"' in line
    )
    assert meter["current_version"] == 2

    assert run_cli(pipeline, "sources", "remove", "meter").returncode == 0
    time.sleep(6)  # workers read the registry again within 5 s
    publish(new, [used("r-removed", VICTIM, source="meter")])
    assert decisions(broker, {"r-removed"})["r-removed"]["reason_code"] == "source_unauthenticated"


def test_a_retention_sweep_no_registered_source_vouches_for_sweeps_nothing(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    workers.start()
    web_log = event(
        "collected",
        "w-log",
        0,
        "system",
        subject=VICTIM,
        channel="website",
        purposes=["website_administration"],
        data={"web_log": PERSONAL["web_log"]},
    )
    publish(lifecycle_env, [web_log])
    decisions(broker, {"w-log"})
    far = datetime(2030, 1, 1, tzinfo=UTC)
    unsigned = {"sweep_id": "sweep-forged", "as_of": far, "requested_by": "intruder", "auth": None}
    # a registered source, but not one registered for retention sweeps
    meter = SourceCredential.parse(register(lifecycle_env, "meter", "--roles", "system"))
    signed = seal(
        CODEC.encode(
            "lifecycle.RetentionSweep",
            {"sweep_id": "sweep-meter", "as_of": far, "requested_by": "x", "auth": None},
        ),
        meter,
    )
    produce_raw(
        broker,
        RETENTION_SWEEPS,
        [
            (b"sweep-forged", CODEC.encode("lifecycle.RetentionSweep", unsigned)),
            (b"sweep-meter", signed),
        ],
    )
    refused = decisions(
        broker, {f"sweep-forged/{p}" for p in range(4)} | {f"sweep-meter/{p}" for p in range(4)}
    )
    assert {d["reason_code"] for k, d in refused.items() if k.startswith("sweep-forged")} == {
        "source_unauthenticated"
    }
    assert {d["reason_code"] for k, d in refused.items() if k.startswith("sweep-meter")} == {
        "source_not_authorized"
    }
    assert "web_log" in live_keys(lifecycle_env, VICTIM)

    swept = run_cli(
        lifecycle_env, "retention", "sweep", "--as-of", "2030-01-01", "--officer", "po-b"
    )
    assert swept.returncode == 0, swept.stderr.decode()
    deadline = time.monotonic() + 60
    while "web_log" in live_keys(lifecycle_env, VICTIM):
        assert time.monotonic() < deadline, "the officer's sweep did not shred the web log"
        time.sleep(0.5)


def test_permit_mode_lets_unsigned_events_through_counted_and_still_refuses_bad_macs(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    worker = workers.start(LIFECYCLE_AUTH_MODE="permit", LIFECYCLE_METRICS_PORT="0")
    unsigned_env = {k: v for k, v in lifecycle_env.items() if k != "LIFECYCLE_SOURCE_SECRET_FILE"}
    result = run_cli(unsigned_env, "publish", "-", stdin=lines([collected("p-unsigned", VICTIM)]))
    assert result.returncode == 0
    assert "LIFECYCLE_SOURCE_SECRET_FILE is not set" in result.stderr.decode()
    publish(lifecycle_env, [used("p-signed", VICTIM)])
    key, record = genuine_record(broker, "p-signed")
    moved = {**record, "event_id": "p-moved", "actor": {"id": "x", "role": "privacy_officer"}}
    produce_raw(broker, CUSTOMER_EVENTS, [(key, CODEC.encode("lifecycle.CustomerEvent", moved))])
    decided = decisions(broker, {"p-unsigned", "p-signed", "p-moved"})
    assert decided["p-unsigned"]["reason_code"] == "allowed"
    assert decided["p-signed"]["reason_code"] == "allowed"
    assert decided["p-moved"]["reason_code"] == "source_unauthenticated"
    worker.wait_for_log("metrics.listening")
    port = next(
        json.loads(line)["port"]
        for line in worker.log().splitlines()
        if '"metrics.listening"' in line
    )
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    counted = [
        line
        for line in metrics.decode().splitlines()
        if line.startswith('lifecycle_unauthenticated_permitted_total{kind="collected"}')
    ]
    assert counted and float(counted[0].split()[-1]) == 1.0


def test_an_erasure_replayed_byte_for_byte_is_answered_again_and_shreds_nothing_new(
    pipeline: dict[str, str], broker: str
) -> None:
    """An intruder keeps a genuine, signed erasure request and produces it again after the
    customer came back: its MAC is valid, but it is a copy of a request already decided, so
    it gets its first decision (and confirmation) again and shreds nothing given since."""
    result = run_cli(pipeline, "erase", VICTIM, "--request-id", "REQ-once", "--wait")
    assert result.returncode == 0, result.stderr.decode()
    assert live_keys(pipeline, VICTIM) == []
    publish(pipeline, [collected("v-again", VICTIM, 9)])
    decisions(broker, {"v-again"})
    given_since = live_keys(pipeline, VICTIM)
    assert {"name", "email", "address", "subject_id"} <= set(given_since)
    (request,) = [
        (m.key(), m.value())
        for m in read_topic(broker, CUSTOMER_EVENTS)
        if CODEC.decode("lifecycle.CustomerEvent", m.value())["kind"] == "deletion_requested"
    ]

    produce_raw(broker, CUSTOMER_EVENTS, [request])

    deadline = time.monotonic() + 60
    while [c["request_id"] for c in confirmations(broker)].count("REQ-once") < 2:
        assert time.monotonic() < deadline, "the replayed request was not answered again"
        time.sleep(0.5)
    answers = [c for c in confirmations(broker) if c["request_id"] == "REQ-once"]
    assert answers[0] == answers[1]  # the first decision's confirmation, same audit seq
    assert live_keys(pipeline, VICTIM) == given_since
    publish(pipeline, [used("v-after-replay", VICTIM)])
    assert decisions(broker, {"v-after-replay"})["v-after-replay"]["reason_code"] == "allowed"
