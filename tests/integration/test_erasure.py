"""Crypto-shredding on the running pipeline: erasure, retention sweeps, the access report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import text

from core.db import make_engine
from processors.deadletters import QUARANTINE_CATEGORY, QUARANTINE_SUBJECT
from streams.codec import SingleObjectCodec
from streams.envelope import associated_data, decrypt_value
from streams.exceptions import KeyShreddedError
from streams.keys import SKIPPED, open_keystore
from streams.topics import CONFIRMATIONS, CUSTOMER_EVENTS, DEAD_LETTERS

from fixtures.broker import Workers, audit_records, read_topic, run_cli
from integration.scenario import PERSONAL, event, lines

CODEC = SingleObjectCodec()
SUBJECT = "C-70001"

HISTORY = [
    event(
        "collected",
        "e01",
        0,
        "system",
        channel="web_form",
        purposes=["billing", "account_notices", "service_provision"],
        data={k: PERSONAL[k] for k in ("name", "email", "address", "banking")},
    ),
    event(
        "collected",
        "e02",
        1,
        "system",
        channel="website",
        purposes=["website_administration"],
        data={"web_log": PERSONAL["web_log"]},
    ),
    event("used", "e03", 2, "billing_clerk", categories=["banking", "name"], purpose="billing"),
    event(
        "shared",
        "e04",
        3,
        "customer_service",
        categories=["name"],
        recipient="authorities",
        purpose="legal_compliance",
    ),
]


def keystore_of(env: dict[str, str]) -> Any:
    data = Path(env["LIFECYCLE_DATA_DIR"])
    return open_keystore(make_engine(f"sqlite:///{data / 'lifecycle.sqlite'}"), data / "master.key")


def readable_values(bootstrap: str, env: dict[str, str], subject_ref: str) -> dict[str, set[str]]:
    """category -> plaintexts that still decrypt, over every copy on customer.events."""
    keystore = keystore_of(env)
    found: dict[str, set[str]] = {}
    for message in read_topic(bootstrap, CUSTOMER_EVENTS):
        record = CODEC.decode("lifecycle.CustomerEvent", message.value())
        if record["subject_ref"] != subject_ref:
            continue
        values = [*(record["body"].get("data") or []), record["subject"]]
        for value in values:
            try:
                plain = decrypt_value(keystore, record["event_id"], subject_ref, value)
            except KeyShreddedError:
                continue
            found.setdefault(value["category"], set()).add(plain)
    return found


@pytest.fixture
def pipeline(workers: Workers, lifecycle_env: dict[str, str], broker: str) -> dict[str, str]:
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(HISTORY)).returncode == 0
    audit_records(broker, CODEC, len(HISTORY))
    return lifecycle_env


def erase(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_cli(env, "erase", SUBJECT, "--wait", "--timeout", "60", *args)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_after_the_confirmation_no_copy_of_the_erased_data_decrypts_anywhere(
    pipeline: dict[str, str], broker: str, tmp_path: Path
) -> None:
    ref = keystore_of(pipeline).subject_ref(SUBJECT)
    assert readable_values(broker, pipeline, ref)["email"] == {PERSONAL["email"]}

    confirmation = erase(pipeline)

    assert confirmation["subject_ref"] == ref and confirmation["status"] == "completed"
    assert set(confirmation["shredded_categories"]) == {"name", "email", "address", "web_log"}
    retained = {r["category"]: r for r in confirmation["retained_categories"]}
    assert (
        set(retained) == {"banking"}
        and retained["banking"]["basis"]
        and retained["banking"]["until"]
    )
    assert confirmation["audit_seq"] == len(HISTORY) + 1
    readable = readable_values(broker, pipeline, ref)
    assert set(readable) == {"banking", "subject_id"}  # kept by law, and who it belongs to
    # nothing else holds a plaintext: changelog topics, dead letters, the databases
    secrets = [PERSONAL[k].encode() for k in ("name", "email", "address", "web_log")]
    from integration.test_bus import all_bytes_on_the_bus

    assert [t for t, data in all_bytes_on_the_bus(broker) if any(s in data for s in secrets)] == []
    engine = make_engine(f"sqlite:///{Path(pipeline['LIFECYCLE_DATA_DIR']) / 'lifecycle.sqlite'}")
    with engine.connect() as conn:
        held = set(
            conn.execute(
                text("SELECT category FROM held_values WHERE subject_ref = :r"), {"r": ref}
            ).scalars()
        )
    assert held == {"banking"}


def test_uses_after_erasure_are_denied_and_retained_data_stays_usable(
    pipeline: dict[str, str], broker: str
) -> None:
    erase(pipeline)
    later = [
        event(
            "used", "e10", 30, "customer_service", categories=["email"], purpose="account_notices"
        ),
        event("used", "e11", 31, "billing_clerk", categories=["banking"], purpose="billing"),
    ]
    assert run_cli(pipeline, "publish", "-", stdin=lines(later)).returncode == 0
    decided = {r["decision"]["event_id"]: r["decision"] for r in audit_records(broker, CODEC, 7)}
    assert (decided["e10"]["decision"], decided["e10"]["reason_code"]) == ("deny", "subject_erased")
    assert (decided["e11"]["decision"], decided["e11"]["reason_code"]) == ("allow", "allowed")


def test_partial_then_repeated_erasure_are_each_confirmed(
    pipeline: dict[str, str], broker: str
) -> None:
    ref = keystore_of(pipeline).subject_ref(SUBJECT)
    partial = erase(pipeline, "--categories", "email", "--request-id", "REQ-P")
    assert partial["shredded_categories"] == ["email"] and partial["retained_categories"] == []
    assert set(readable_values(broker, pipeline, ref)) == {
        "name",
        "address",
        "banking",
        "web_log",
        "subject_id",
    }

    again = erase(pipeline, "--categories", "email", "--request-id", "REQ-P")
    assert again["request_id"] == "REQ-P" and again["shredded_categories"] == ["email"]
    assert again["audit_seq"] > partial["audit_seq"]
    confirmations = read_topic(broker, CONFIRMATIONS, min_count=2)
    assert [
        CODEC.decode("lifecycle.DeletionConfirmation", m.value())["request_id"]
        for m in confirmations
    ] == ["REQ-P", "REQ-P"]


def test_a_later_collection_gets_new_keys_and_never_revives_erased_values(
    pipeline: dict[str, str], broker: str
) -> None:
    ref = keystore_of(pipeline).subject_ref(SUBJECT)
    erase(pipeline, "--categories", "email")
    fresh = event(
        "collected",
        "e20",
        40,
        "system",
        channel="web_form",
        purposes=["billing"],
        data={"email": "new.address@example.org"},
    )
    assert run_cli(pipeline, "publish", "-", stdin=lines([fresh])).returncode == 0
    audit_records(broker, CODEC, len(HISTORY) + 2)
    assert readable_values(broker, pipeline, ref)["email"] == {"new.address@example.org"}


def test_erasing_an_unknown_subject_is_confirmed_with_nothing_shredded(
    pipeline: dict[str, str],
) -> None:
    result = run_cli(pipeline, "erase", "C-NOBODY", "--wait", "--timeout", "60")
    assert result.returncode == 0, result.stderr.decode()
    confirmation = json.loads(result.stdout)
    assert confirmation["status"] == "nothing_held" and confirmation["shredded_categories"] == []


def test_an_erasure_naming_an_unknown_category_is_refused_with_a_clear_error(
    pipeline: dict[str, str],
) -> None:
    result = run_cli(pipeline, "erase", SUBJECT, "--categories", "shoe_size")
    assert result.returncode != 0
    assert "shoe_size" in result.stderr.decode()


def test_retention_sweep_shreds_expired_web_logs_and_keeps_the_rest(
    pipeline: dict[str, str], broker: str
) -> None:
    ref = keystore_of(pipeline).subject_ref(SUBJECT)
    swept = run_cli(pipeline, "retention", "sweep", "--as-of", "2026-09-01")
    assert swept.returncode == 0, swept.stderr.decode()
    records = audit_records(broker, CODEC, len(HISTORY) + 1)
    sweep = records[-1]["decision"]
    assert (sweep["kind"], sweep["reason_code"], sweep["categories"]) == (
        "retention_sweep",
        "retention_expired",
        ["web_log"],
    )
    assert set(readable_values(broker, pipeline, ref)) == {
        "name",
        "email",
        "address",
        "banking",
        "subject_id",
    }
    use = event(
        "used", "e30", 50, "web_admin", categories=["web_log"], purpose="website_administration"
    )
    assert run_cli(pipeline, "publish", "-", stdin=lines([use])).returncode == 0
    decided = audit_records(broker, CODEC, len(HISTORY) + 2)[-1]["decision"]
    assert (decided["event_id"], decided["reason_code"]) == ("e30", "retention_expired")


def test_the_access_report_shows_what_is_held_used_shared_and_erased(
    pipeline: dict[str, str], broker: str
) -> None:
    consent = event(
        "consent_changed", "e40", 20, "system", purpose="personalization", granted=False
    )
    assert run_cli(pipeline, "publish", "-", stdin=lines([consent])).returncode == 0
    erase(pipeline, "--categories", "address")
    result = run_cli(pipeline, "subject", "report", SUBJECT, "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    held = {h["category"]: h for h in report["held"]}
    assert held["email"]["value"] == PERSONAL["email"]
    assert "billing" in held["email"]["purposes"]
    assert "address" not in held
    assert [e["category"] for e in report["erased"]] == ["address"]
    uses = {(u["kind"], u["purpose"], u["recipient"]) for u in report["uses"]}
    assert ("used", "billing", None) in uses and (
        "shared",
        "legal_compliance",
        "authorities",
    ) in uses
    assert report["consent"] == {"personalization": False}
    redacted = run_cli(pipeline, "subject", "report", SUBJECT, "--json", "--role", "marketing")
    assert PERSONAL["email"] not in redacted.stdout.decode()


def test_every_running_worker_drops_the_shredded_keys_before_the_confirmation_is_read(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    first, second = workers.start(), workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(HISTORY)).returncode == 0
    audit_records(broker, CODEC, len(HISTORY))
    ref = keystore_of(lifecycle_env).subject_ref(SUBJECT)
    warm = keystore_of(lifecycle_env)  # a process that decrypted before: its cache is warm
    assert readable_values(broker, lifecycle_env, ref)["email"] == {PERSONAL["email"]}
    sealed = next(
        (record["event_id"], value)
        for message in read_topic(broker, CUSTOMER_EVENTS)
        for record in [CODEC.decode("lifecycle.CustomerEvent", message.value())]
        for value in record["body"].get("data") or []
        if value["category"] == "email"
    )
    assert decrypt_value(warm, sealed[0], ref, sealed[1]) == PERSONAL["email"]

    erase(lifecycle_env)

    for worker in (first, second):
        worker.wait_for_log(
            f'"subject_ref": "{ref}", "categories": ["address", "email", "name"', 10
        )
    with pytest.raises(KeyShreddedError):
        decrypt_value(warm, sealed[0], ref, sealed[1])


def test_a_newer_collection_rectifies_the_value_the_report_shows(
    pipeline: dict[str, str], broker: str
) -> None:
    corrected = event(
        "collected",
        "e50",
        45,
        "customer_service",
        channel="telephone",
        purposes=["billing"],
        data={"address": "99 Corrected Road, Arima"},
    )
    assert run_cli(pipeline, "publish", "-", stdin=lines([corrected])).returncode == 0
    audit_records(broker, CODEC, len(HISTORY) + 1)
    report = json.loads(run_cli(pipeline, "subject", "report", SUBJECT, "--json").stdout)
    held = {h["category"]: h for h in report["held"]}
    assert held["address"]["value"] == "99 Corrected Road, Arima"
    assert held["address"]["channel"] == "telephone"
    assert held["name"]["value"] == PERSONAL["name"]


# --------------------------------------------------------------------------- values never held


BIRTH_DATE, REFUSED_BIRTH_DATE = "1980-01-01", "1999-09-09"
REFUSED_EMAIL = "refused.copy@example.org"


def collection(event_id: str, minute: int, role: str, **data: str) -> dict[str, Any]:
    return event(
        "collected",
        event_id,
        minute,
        role,
        channel="telephone",
        purposes=["service_provision"],
        data=data,
    )


def decided(broker: str, count: int) -> dict[str, dict[str, Any]]:
    return {r["decision"]["event_id"]: r["decision"] for r in audit_records(broker, CODEC, count)}


def test_erasure_shreds_a_live_key_of_a_value_the_subject_never_held(
    pipeline: dict[str, str], broker: str
) -> None:
    # reusing an event_id the ledger holds for another kind gets the collection dead-lettered,
    # never decided: its value is on customer.events under a live key, and nothing is held
    lettered = collection("e03", 30, "customer_service", telephone="+1 868 555 0100")
    assert run_cli(pipeline, "publish", "-", stdin=lines([lettered])).returncode == 0
    read_topic(broker, DEAD_LETTERS, min_count=1)
    ref = keystore_of(pipeline).subject_ref(SUBJECT)
    assert readable_values(broker, pipeline, ref)["telephone"] == {"+1 868 555 0100"}

    confirmation = erase(pipeline, "--categories", "telephone")

    assert (confirmation["status"], confirmation["shredded_categories"]) == (
        "completed",
        ["telephone"],
    )
    assert "telephone" not in readable_values(broker, pipeline, ref)
    assert {"name", "email", "banking", "subject_id"} <= set(readable_values(broker, pipeline, ref))


def test_a_refused_collection_is_unreadable_at_once_and_the_held_value_survives_it(
    pipeline: dict[str, str], broker: str
) -> None:
    ref = keystore_of(pipeline).subject_ref(SUBJECT)
    # date_of_birth: allowed then refused in one publish (usually one batch); email: held
    # since e01 (in the vault), then refused. field_technician may touch neither.
    later = [
        collection("e60", 30, "customer_service", date_of_birth=BIRTH_DATE),
        collection("e61", 31, "field_technician", date_of_birth=REFUSED_BIRTH_DATE),
        collection("e62", 32, "field_technician", email=REFUSED_EMAIL),
    ]
    assert run_cli(pipeline, "publish", "-", stdin=lines(later)).returncode == 0
    outcome = decided(broker, len(HISTORY) + 3)
    assert [outcome[e]["reason_code"] for e in ("e60", "e61", "e62")] == [
        "allowed",
        "role_not_authorized",
        "role_not_authorized",
    ]

    readable = readable_values(broker, pipeline, ref)
    assert REFUSED_BIRTH_DATE not in readable.get("date_of_birth", set())
    assert REFUSED_EMAIL not in readable.get("email", set())
    assert readable["name"] == {PERSONAL["name"]}  # other categories' keys are untouched
    # the refused values had key versions of their own: the held values' copies still read
    assert readable["email"] == {PERSONAL["email"]}
    assert readable["date_of_birth"] == {BIRTH_DATE}
    report = json.loads(run_cli(pipeline, "subject", "report", SUBJECT, "--json").stdout)
    held = {h["category"]: h["value"] for h in report["held"]}
    assert held["date_of_birth"] == BIRTH_DATE and held["email"] == PERSONAL["email"]
    assert report["erased"] == []  # a refusal erased nothing the customer had given
    keys = keystore_of(pipeline).keys_of(ref)
    destroyed = {
        (k.category, k.shred_reason)
        for k in keys
        if k.shredded_at is not None and k.shred_reason != SKIPPED  # numbers that had no key
    }
    assert destroyed == {
        ("date_of_birth", "role_not_authorized"),
        ("email", "role_not_authorized"),
    }

    use = event("used", "e63", 33, "customer_service", categories=["email"], purpose="billing")
    assert run_cli(pipeline, "publish", "-", stdin=lines([use])).returncode == 0
    # + 5: the report's reveal of the values is a ledger record too (values_revealed)
    assert decided(broker, len(HISTORY) + 5)["e63"]["reason_code"] == "allowed"


def test_the_subject_id_goes_when_a_retention_sweep_shreds_the_last_data_held(
    pipeline: dict[str, str], broker: str
) -> None:
    ref = keystore_of(pipeline).subject_ref(SUBJECT)
    confirmation = erase(pipeline)
    assert [r["category"] for r in confirmation["retained_categories"]] == ["banking"]
    assert set(readable_values(broker, pipeline, ref)) == {"banking", "subject_id"}

    swept = run_cli(pipeline, "retention", "sweep", "--as-of", "2033-01-01T00:00:00+00:00")

    assert swept.returncode == 0, swept.stderr.decode()
    sweep = decided(broker, len(HISTORY) + 2)
    assert [d["categories"] for d in sweep.values() if d["kind"] == "retention_sweep"] == [
        ["banking"]
    ]
    assert readable_values(broker, pipeline, ref) == {}
    assert all(k.shredded_at is not None for k in keystore_of(pipeline).keys_of(ref))


def test_a_partial_erasure_of_the_last_category_held_shreds_the_subject_id_too(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    workers.start()
    only = collection("e70", 0, "customer_service", email=PERSONAL["email"])
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines([only])).returncode == 0
    audit_records(broker, CODEC, 1)
    ref = keystore_of(lifecycle_env).subject_ref(SUBJECT)
    assert set(readable_values(broker, lifecycle_env, ref)) == {"email", "subject_id"}

    confirmation = erase(lifecycle_env, "--categories", "email")

    assert confirmation["shredded_categories"] == ["email"]
    assert readable_values(broker, lifecycle_env, ref) == {}


def test_retention_sweep_as_of_takes_zoned_and_naive_times_and_refuses_garbage(
    lifecycle_env: dict[str, str],
) -> None:
    for garbage in ("next tuesday", "2033-13-01", ""):
        refused = run_cli(lifecycle_env, "retention", "sweep", "--as-of", garbage)
        assert refused.returncode == 2
        assert "--as-of" in refused.stderr.decode() and "ISO-8601" in refused.stderr.decode()
    for good in (
        "2033-01-01",
        "2033-01-01T00:00:00",
        "2033-01-01T04:00:00+04:00",
        "2033-01-01T00:00Z",
    ):
        accepted = run_cli(lifecycle_env, "retention", "sweep", "--as-of", good)
        assert accepted.returncode == 0, (good, accepted.stderr.decode())


def test_as_of_times_are_read_as_instants_in_utc() -> None:
    from core.instants import InstantType as Instant

    midnight = datetime(2033, 1, 1, tzinfo=UTC)
    for text_ in ("2033-01-01", "2033-01-01T00:00:00", "2033-01-01T04:00:00+04:00", "20330101"):
        assert Instant().convert(text_, None, None) == midnight


# --------------------------------------------------------------------------- the whole bus

ERASED_HISTORY = [
    event(
        "collected",
        "e01",
        0,
        "system",
        channel="web_form",
        purposes=["billing", "account_notices", "service_provision"],
        data={k: PERSONAL[k] for k in ("name", "email", "address")},  # nothing the law keeps
    ),
    *HISTORY[1:3],  # web_log collected; name and banking used (banking: not_collected)
    collection("r01", 10, "customer_service", date_of_birth=BIRTH_DATE),
    collection("r02", 11, "field_technician", date_of_birth=REFUSED_BIRTH_DATE),  # refused
    collection("r03", 12, "field_technician", email=REFUSED_EMAIL),  # refused, email held
    event(
        "collected",
        "r04",
        13,
        "system",
        channel="online_tendering",
        purposes=["transaction_processing"],
        data={"credit_card": PERSONAL["credit_card"]},
    ),  # prohibited: the publisher withholds the card
]
LETTERED = collection("e03", 14, "customer_service", telephone="+1 868 555 0199")
"""Reuses the event_id of a use the ledger holds: dead-lettered, never decided."""


def sealed_values(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(record["body"].get("data") or []), record["subject"]]


def subject_values_on_the_bus(
    broker: str, env: dict[str, str], ref: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, event_id, encrypted value) for every value of ``ref`` on customer.events and
    inside every dead letter (unsealed with the quarantine key: a dead letter carries the
    original record)."""
    keystore = keystore_of(env)
    found = []
    for message in read_topic(broker, CUSTOMER_EVENTS):
        record = CODEC.decode("lifecycle.CustomerEvent", message.value())
        if record["subject_ref"] == ref:
            found += [(CUSTOMER_EVENTS, record["event_id"], v) for v in sealed_values(record)]
    for message in read_topic(broker, DEAD_LETTERS):
        headers = {name: value for name, value in message.headers() or []}
        position = "/".join(
            headers[f"lifecycle.source.{part}"].decode()
            for part in ("topic", "partition", "offset")
        )
        quarantine = keystore.decryption_key(
            QUARANTINE_SUBJECT,
            QUARANTINE_CATEGORY,
            int(headers["lifecycle.quarantine.key_version"]),
        )
        sealed = message.value()
        payload = quarantine.aead.decrypt(
            sealed[:12],
            sealed[12:],
            associated_data(position, QUARANTINE_SUBJECT, QUARANTINE_CATEGORY),
        )
        key_length = int.from_bytes(payload[:4], "big")
        record = CODEC.decode("lifecycle.CustomerEvent", payload[4 + key_length :])
        if record["subject_ref"] == ref:
            found += [(DEAD_LETTERS, record["event_id"], v) for v in sealed_values(record)]
    return found


def every_live_key(env: dict[str, str]) -> list[Any]:
    """Every data key the key store still holds, of any subject and category, unwrapped."""
    keystore = keystore_of(env)
    engine = make_engine(f"sqlite:///{Path(env['LIFECYCLE_DATA_DIR']) / 'lifecycle.sqlite'}")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT subject_ref, category, version FROM data_keys WHERE wrapped_key IS NOT NULL"
            )
        ).all()
    return [keystore.decryption_key(*row) for row in rows]


def test_after_erasing_a_history_with_refused_collections_no_key_opens_any_value_on_any_topic(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(ERASED_HISTORY)).returncode == 0
    audit_records(broker, CODEC, len(ERASED_HISTORY))
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines([LETTERED])).returncode == 0
    read_topic(broker, DEAD_LETTERS, min_count=1)
    ref = keystore_of(lifecycle_env).subject_ref(SUBJECT)

    confirmation = erase(lifecycle_env)

    assert confirmation["status"] == "completed" and confirmation["retained_categories"] == []
    assert set(confirmation["shredded_categories"]) == {
        "name",
        "email",
        "address",
        "web_log",
        "date_of_birth",
        "telephone",  # never held: the dead-lettered collection's live key
    }
    values = subject_values_on_the_bus(broker, lifecycle_env, ref)
    assert {topic for topic, _, _ in values} == {CUSTOMER_EVENTS, DEAD_LETTERS}
    assert len(values) >= 2 * len(ERASED_HISTORY)
    live = every_live_key(lifecycle_env)
    assert live and all(key.subject_ref != ref for key in live)
    for _topic, event_id, value in values:
        if value["key_version"] < 1:
            continue  # withheld by the publisher: no ciphertext at all
        aad = associated_data(event_id, ref, value["category"])
        for key in live:
            with pytest.raises(InvalidTag):
                key.aead.decrypt(value["nonce"], value["ciphertext"], aad)
    # and no plaintext of it anywhere: values, keys, headers of every topic, changelogs included
    secrets = [
        SUBJECT.encode(),
        BIRTH_DATE.encode(),
        REFUSED_BIRTH_DATE.encode(),
        REFUSED_EMAIL.encode(),
        b"+1 868 555 0199",
        *(PERSONAL[k].encode() for k in ("name", "email", "address", "web_log", "credit_card")),
    ]
    from integration.test_bus import all_bytes_on_the_bus

    on_bus = all_bytes_on_the_bus(broker)
    assert any(topic.endswith("-changelog") for topic, _ in on_bus)
    assert [t for t, data in on_bus if any(s in data for s in secrets)] == []
    report = json.loads(run_cli(lifecycle_env, "subject", "report", SUBJECT, "--json").stdout)
    assert report["held"] == []
