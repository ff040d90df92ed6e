"""Reading after erasure, on the embedded broker: the debugging consumer (``lifecycle events
tail``) shows the stated placeholder for shredded values and never fails; two workers and two
long-running decrypting tails all stop decrypting once the confirmation is out; the
confirmations reader prints what is on the topic and follows new ones."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from processors.deadletters import dead_letter
from streams.envelope import SHREDDED
from streams.partitioning import home_partition
from streams.topics import CUSTOMER_EVENTS, DEAD_LETTERS

from fixtures.broker import LIFECYCLE, REPO, Workers, audit_records, read_topic, run_cli
from integration.scenario import PERSONAL, event, lines
from integration.test_erasure import CODEC, HISTORY, SUBJECT, erase, keystore_of

ERASED = ("name", "email", "address", "web_log")  # banking is kept by law (see test_erasure)


@dataclass
class Follower:
    """A long-running ``lifecycle`` command whose stdout goes to a file the test reads."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

    def wait_for(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.json_lines()
            if done(found):
                return found
            if self.process.poll() is not None:
                raise AssertionError(
                    f"exited ({self.process.returncode}): {self.err.read_text()[-2000:]}"
                )
            time.sleep(0.2)
        raise AssertionError(f"not printed within {timeout}s:\n{self.text()[-3000:]}")

    def wait_for_stderr(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.err.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"exited ({self.process.returncode}): {self.err.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on stderr within {timeout}s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


@pytest.fixture
def follow(lifecycle_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Follower]]:
    """Starts ``lifecycle ARGS...`` in the background; stops every one after the test."""
    started: list[Follower] = []

    def start(*args: str) -> Follower:
        name = f"follower-{len(started)}"
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(
                [LIFECYCLE, *args], env=lifecycle_env, cwd=REPO, stdout=stdout, stderr=stderr
            )
        started.append(Follower(process, out, err))
        return started[-1]

    yield start
    for follower in started:
        follower.stop()


@pytest.fixture
def pipeline(workers: Workers, lifecycle_env: dict[str, str], broker: str) -> dict[str, str]:
    """One worker, and the subject's history decided."""
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(HISTORY)).returncode == 0
    audit_records(broker, CODEC, len(HISTORY))
    return lifecycle_env


def tail(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    result = run_cli(env, "events", "tail", *args)
    assert result.returncode == 0, result.stderr.decode()
    return result


def values_of(shown: dict[str, Any]) -> dict[str, str]:
    """category -> what a decrypting tail printed for it (subject_id included)."""
    found = {"subject_id": shown["subject"]["value"]}
    found.update({value["category"]: value["value"] for value in shown.get("data", [])})
    return found


def printed(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode() + result.stderr.decode()


# --------------------------------------------------------------------------- events tail


def test_a_tail_without_decrypt_shows_each_event_but_only_ciphertext_lengths(
    lifecycle_env: dict[str, str],
) -> None:
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(HISTORY)).returncode == 0

    shown = [json.loads(line) for line in tail(lifecycle_env, "--json").stdout.splitlines()]

    assert sorted(s["event_id"] for s in shown) == ["e01", "e02", "e03", "e04"]
    by_id = {s["event_id"]: s for s in shown}
    collected = by_id["e01"]
    assert collected["kind"] == "collected" and collected["channel"] == "web_form"
    assert collected["purposes"] == ["billing", "account_notices", "service_provision"]
    assert {v["category"] for v in collected["data"]} == {"name", "email", "address", "banking"}
    assert all(v["ciphertext_bytes"] > 0 and "value" not in v for v in collected["data"])
    assert (by_id["e04"]["recipient"], by_id["e04"]["purpose"]) == (
        "authorities",
        "legal_compliance",
    )
    assert len({s["subject_ref"] for s in shown}) == 1
    text = tail(lifecycle_env)
    assert "e03" in text.stdout.decode() and "B encrypted, key v1" in text.stdout.decode()
    for output in (printed(text), json.dumps(shown)):
        assert SUBJECT not in output
        assert not [k for k, v in PERSONAL.items() if v in output]


def test_a_record_the_tail_cannot_decode_is_named_and_the_tail_carries_on(
    lifecycle_env: dict[str, str], broker: str
) -> None:
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(CUSTOMER_EVENTS, b"not an avro record", b"some-key", partition=1)
    producer.flush(10)
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(HISTORY[:2])).returncode == 0
    keystore = keystore_of(lifecycle_env)
    letter = dead_letter(
        keystore,
        topic=CUSTOMER_EVENTS,
        partition=1,
        offset=0,
        key=b"some-key",
        value=b"not an avro record",
        error="not an Avro single-object record (missing C3 01 header)",
    )
    producer.produce(DEAD_LETTERS, letter.value, headers=letter.headers)
    producer.flush(10)

    result = tail(lifecycle_env, "--decrypt")
    out = result.stdout.decode().splitlines()
    assert (
        "customer.events/1@0 undecodable: DecodeError: not an Avro single-object record "
        "(missing C3 01 header)"
    ) in out
    assert sum(" collected e0" in line for line in out) == 2  # the good ones, after it or not
    assert "1 undecodable" in result.stderr.decode()

    letters = tail(lifecycle_env, "--topic", DEAD_LETTERS)
    (line,) = letters.stdout.decode().splitlines()
    assert line.startswith("customer.events.dlq/0@0 dead letter of customer.events/1/0 ")
    assert "missing C3 01 header" in line and "some-key" not in line
    opened = tail(lifecycle_env, "--topic", DEAD_LETTERS, "--decrypt", "--json")
    original = json.loads(opened.stdout)["original"]
    assert original == {"key": "some-key", "value": "not an avro record"}


def test_a_following_tail_from_the_live_end_prints_only_what_arrives_after_it_started(
    lifecycle_env: dict[str, str], follow: Callable[..., Follower]
) -> None:
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(HISTORY[:2])).returncode == 0
    following = follow("events", "tail", "--follow", "--json")
    following.wait_for_stderr("following customer.events (4 partitions) from the live end")

    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(HISTORY[2:])).returncode == 0

    shown = following.wait_for(lambda s: len(s) == 2, timeout=30)
    assert sorted(s["event_id"] for s in shown) == ["e03", "e04"]
    assert following.stop() == 0
    assert "read 2 records (0 undecodable)" in following.err.read_text()


def test_a_decrypting_tail_shows_values_before_erasure_and_the_placeholder_after(
    pipeline: dict[str, str],
) -> None:
    before = tail(pipeline, "--decrypt", "--subject", SUBJECT, "--json")
    shown = {s["event_id"]: s for s in map(json.loads, before.stdout.splitlines())}
    assert sorted(shown) == ["e01", "e02", "e03", "e04"]
    assert values_of(shown["e01"]) == {
        "subject_id": SUBJECT,
        **{k: PERSONAL[k] for k in ("name", "email", "address", "banking")},
    }

    erase(pipeline)

    after = tail(pipeline, "--decrypt", "--subject", SUBJECT, "--json")
    shown = {s["event_id"]: s for s in map(json.loads, after.stdout.splitlines())}
    assert values_of(shown["e01"]) == {
        "subject_id": SUBJECT,  # kept: banking is retained by law, and whose it is
        "name": SHREDDED,
        "email": SHREDDED,
        "address": SHREDDED,
        "banking": PERSONAL["banking"],
    }
    assert values_of(shown["e02"])["web_log"] == SHREDDED
    (request,) = [s for s in shown.values() if s["kind"] == "deletion_requested"]
    assert request["categories"] is None and request["request_id"].startswith("REQ-")
    as_text = tail(pipeline, "--decrypt", "--subject", SUBJECT)
    assert f"email={SHREDDED}" in as_text.stdout.decode()
    assert "4 shredded" in as_text.stderr.decode()
    for output in (printed(after), printed(as_text)):
        assert not [k for k in ERASED if PERSONAL[k] in output]


# --------------------------------------------------------------------------- two workers


def _revocations(log: str, subject_ref: str) -> list[dict[str, Any]]:
    heard = []
    for line in log.splitlines():
        if '"keys.revoked"' not in line:
            continue
        record = json.loads(line)
        if record.get("event") == "keys.revoked" and record["subject_ref"] == subject_ref:
            heard.append(record)
    return heard


def test_after_the_confirmation_no_worker_and_no_running_decrypting_tail_reads_erased_values(
    workers: Workers,
    lifecycle_env: dict[str, str],
    broker: str,
    follow: Callable[..., Follower],
) -> None:
    """Two workers, and two tails that decrypted the values before the erasure (so their key
    caches hold the keys). After the confirmation, copies of the subject's old records are
    published again, so each tail must decrypt the same ciphertext once more: each shows the
    placeholder. The copies go to a partition that is not their key's, which the workers
    dead-letter: the decision state never sees them.

    Why this holds: every decryption asks the key store whether the key still exists, and the
    shred commits before the erasure decision (hence the confirmation) exists. A cache drop
    alone could not promise it: the revocation record is published with the erasure decision,
    so each worker hears it after the confirmation's ``completed_at``; the test shows that
    both do, within seconds."""
    first, second = workers.start(), workers.start()
    for worker in (first, second):  # its revocation listener runs from before this line
        worker.wait_for_log("[^Worker]: Ready", 90)
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(HISTORY)).returncode == 0
    audit_records(broker, CODEC, len(HISTORY))
    ref = keystore_of(lifecycle_env).subject_ref(SUBJECT)
    tails = [follow("events", "tail", "--decrypt", "--follow", "--from-beginning", "--json")]
    tails.append(follow("events", "tail", "--decrypt", "--follow", "--from-beginning", "--json"))
    for running in tails:
        shown = running.wait_for(lambda s: any(e["event_id"] == "e01" for e in s))
        e01 = next(e for e in shown if e["event_id"] == "e01")
        assert values_of(e01)["email"] == PERSONAL["email"]

    confirmation = erase(lifecycle_env)
    completed_at = datetime.fromisoformat(confirmation["completed_at"])

    originals = [
        m for m in read_topic(broker, CUSTOMER_EVENTS) if m.key() == ref.encode() and m.value()
    ]
    elsewhere = (home_partition(ref.encode(), 4) + 1) % 4
    producer = Producer({"bootstrap.servers": broker})
    for message in originals:
        producer.produce(CUSTOMER_EVENTS, message.value(), message.key(), partition=elsewhere)
    producer.flush(10)
    for running in tails:
        shown = running.wait_for(
            lambda s: any(e["event_id"] == "e01" and e["partition"] == elsewhere for e in s)
        )
        copies = [e for e in shown if e["partition"] == elsewhere]
        e01 = next(e for e in copies if e["event_id"] == "e01")
        assert values_of(e01) == {
            "subject_id": SUBJECT,
            "name": SHREDDED,
            "email": SHREDDED,
            "address": SHREDDED,
            "banking": PERSONAL["banking"],
        }
        after = json.dumps(copies)
        assert not [k for k in ERASED if PERSONAL[k] in after]
        assert running.stop() == 0
        assert "decrypted" in running.err.read_text()

    for worker in (first, second):
        worker.wait_for_log('"keys.revoked"', 10)
        (heard,) = _revocations(worker.log(), ref)
        assert set(heard["categories"]) >= {"name", "email", "address"}
        at = datetime.fromisoformat(heard["timestamp"])
        assert completed_at <= at < completed_at + timedelta(seconds=10)
    dead = read_topic(broker, DEAD_LETTERS, min_count=len(originals))
    assert len(dead) == len(originals)  # the copies were refused, not decided


# --------------------------------------------------------------------------- confirmations


def test_confirmations_prints_what_is_on_the_topic_and_follows_new_ones(
    pipeline: dict[str, str], follow: Callable[..., Follower]
) -> None:
    erase(pipeline, "--categories", "email", "--request-id", "REQ-ONE")

    listed = run_cli(pipeline, "confirmations", timeout=60)
    assert listed.returncode == 0, listed.stderr.decode()
    (only,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (only["request_id"], only["shredded_categories"]) == ("REQ-ONE", ["email"])

    following = follow("confirmations", "--follow")
    following.wait_for(lambda c: [x["request_id"] for x in c] == ["REQ-ONE"])
    erase(pipeline, "--categories", "address", "--request-id", "REQ-TWO")
    found = following.wait_for(lambda c: len(c) == 2, timeout=30)
    assert [c["request_id"] for c in found] == ["REQ-ONE", "REQ-TWO"]
    assert found[1]["shredded_categories"] == ["address"] and found[1]["status"] == "completed"
    assert following.process.poll() is None  # still following


# --------------------------------------------------------------------------- the access report


def report(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    result = run_cli(env, "subject", "report", SUBJECT, *args)
    assert result.returncode == 0, result.stderr.decode()
    return result


def test_after_a_correction_the_report_lists_every_purpose_the_decisions_still_allow(
    pipeline: dict[str, str], broker: str
) -> None:
    """A newer collection of a category replaces its value, and adds its purposes to those
    declared before (the customer was told of both): the decisions allow either, and the
    report says so, rather than only the latest collection's purposes."""
    corrected = event(
        "collected",
        "e50",
        45,
        "customer_service",
        channel="telephone",
        purposes=["customer_support"],
        data={"address": "99 Corrected Road, Arima"},
    )
    earlier_purpose = event(
        "used", "e51", 46, "customer_service", categories=["address"], purpose="service_provision"
    )
    assert (
        run_cli(pipeline, "publish", "-", stdin=lines([corrected, earlier_purpose])).returncode == 0
    )
    decided = audit_records(broker, CODEC, len(HISTORY) + 2)[-1]["decision"]
    assert (decided["event_id"], decided["decision"]) == ("e51", "allow")

    held = {h["category"]: h for h in json.loads(report(pipeline, "--json").stdout)["held"]}

    assert (held["address"]["value"], held["address"]["channel"]) == (
        "99 Corrected Road, Arima",
        "telephone",
    )
    assert held["address"]["purposes"] == [
        "billing",
        "account_notices",
        "service_provision",
        "customer_support",
    ]
    assert held["name"]["purposes"] == ["billing", "account_notices", "service_provision"]
    assert "for billing, account_notices, service_provision, customer_support)" in (
        report(pipeline).stdout.decode()
    )


def test_the_report_gives_instants_with_their_zone_and_consent_defaults_marked(
    pipeline: dict[str, str],
) -> None:
    withdrawn = event(
        "consent_changed", "e40", 20, "system", purpose="personalization", granted=False
    )
    assert run_cli(pipeline, "publish", "-", stdin=lines([withdrawn])).returncode == 0
    erase(pipeline, "--categories", "address")

    shown = json.loads(report(pipeline, "--json").stdout)

    (erased,) = shown["erased"]
    erased_at = datetime.fromisoformat(erased["erased_at"])
    assert erased["category"] == "address" and erased_at.utcoffset() == timedelta(0)
    assert all(datetime.fromisoformat(h["collected_at"]).tzinfo for h in shown["held"])
    assert shown["consent"] == {"personalization": False}
    assert shown["consent_defaults"] == {
        "contests_promotions_surveys": True,
        "service_information": True,
    }
    text = report(pipeline).stdout.decode()
    assert "  personalization: withdrawn\n" in text
    assert "  service_information: granted (policy default)\n" in text
    assert f"address          subject_erased at {erased['erased_at']}" in text
