"""Source MACs on records, secret tokens and secret files (pure logic, no broker)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest

from schemas import HISTORY_DIR
from streams.codec import SINGLE_OBJECT_MAGIC, SingleObjectCodec, fingerprint
from streams.exceptions import EncodeError, SourceError
from streams.sourceauth import (
    SourceCredential,
    SourceCredentials,
    mac_matches,
    new_secret,
    seal,
    signed_part,
)

from tests_support import customer_event

CODEC = SingleObjectCodec()


def sealed_event(credential: SourceCredential, **overrides: Any) -> bytes:
    record = customer_event("used", source=credential.name, **overrides)
    return seal(CODEC.encode("lifecycle.CustomerEvent", record), credential)


def verifies(value: bytes, secret: bytes) -> bool:
    auth = CODEC.decode("lifecycle.CustomerEvent", value)["auth"]
    signed = None if auth is None else signed_part(value, auth)
    return signed is not None and mac_matches(secret, signed, auth["mac"])


def test_a_sealed_record_decodes_with_its_source_and_version_and_its_mac_verifies() -> None:
    billing = SourceCredential("billing", 3, new_secret())
    value = sealed_event(billing)
    decoded = CODEC.decode("lifecycle.CustomerEvent", value)
    assert decoded["auth"]["source"] == "billing" and decoded["auth"]["key_version"] == 3
    assert len(decoded["auth"]["mac"]) == 32
    assert verifies(value, billing.secret)
    assert not verifies(value, new_secret())


def test_changing_any_byte_before_the_mac_breaks_it() -> None:
    billing = SourceCredential("billing", 1, new_secret())
    value = sealed_event(billing)
    mac_starts = len(value) - 32
    for position in range(mac_starts):
        changed = bytearray(value)
        changed[position] ^= 0x01
        try:
            still = verifies(bytes(changed), billing.secret)
        except Exception:  # no longer decodes: refused before any MAC check
            still = False
        assert not still, f"a change at byte {position} kept the MAC valid"


def test_a_mac_moved_onto_a_relabelled_copy_does_not_verify() -> None:
    billing = SourceCredential("billing", 1, new_secret())
    original = CODEC.decode("lifecycle.CustomerEvent", sealed_event(billing))
    for change in (
        {"kind": "deletion_requested", "body": {"request_id": "F-1", "categories": None}},
        {"actor": {"id": "x", "role": "privacy_officer"}},
        {"event_id": "another"},
        {"source": "crm"},
        {"subject_ref": "cd" * 32},
    ):
        copy = CODEC.encode("lifecycle.CustomerEvent", {**original, **change})
        assert not verifies(copy, billing.secret), change


def test_a_mac_under_one_source_name_cannot_be_claimed_for_another() -> None:
    secret = new_secret()
    value = sealed_event(SourceCredential("billing", 1, secret))
    decoded = CODEC.decode("lifecycle.CustomerEvent", value)
    claimed = {**decoded, "auth": {**decoded["auth"], "source": "crm"}}
    copy = CODEC.encode("lifecycle.CustomerEvent", claimed)
    assert not verifies(copy, secret)


def test_a_record_written_before_the_auth_field_existed_decodes_unauthenticated() -> None:
    path = HISTORY_DIR / "lifecycle.CustomerEvent.v1.avsc"
    old = fastavro.parse_schema(json.loads(path.read_text()), _write_hint=False)
    record = customer_event("used")
    del record["auth"]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old, record)
    decoded = CODEC.decode(
        "lifecycle.CustomerEvent", SINGLE_OBJECT_MAGIC + fingerprint(old) + body.getvalue()
    )
    assert decoded["auth"] is None and decoded["event_id"] == record["event_id"]


def test_seal_refuses_a_record_that_does_not_end_with_an_empty_auth() -> None:
    billing = SourceCredential("billing", 1, new_secret())
    value = sealed_event(billing)
    with pytest.raises(EncodeError):
        seal(value, billing)


def test_a_token_round_trips_and_never_shows_the_secret_in_repr_or_errors() -> None:
    credential = SourceCredential("crm", 2, new_secret())
    token = credential.token()
    assert token.startswith("lcs1:crm:2:")
    assert SourceCredential.parse(token) == credential
    assert token.split(":")[-1] not in repr(credential)
    for bad in ("lcs1:crm:2", "lcs2:crm:2:AAAA", "lcs1:crm:x:AAAA", "lcs1:CRM:1:" + "A" * 43):
        with pytest.raises(SourceError) as caught:
            SourceCredential.parse(bad)
        assert "AAAA" not in str(caught.value)
    with pytest.raises(SourceError, match="32 bytes"):
        SourceCredential.parse("lcs1:crm:1:AAAA")


def write(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write(path, SourceCredential("web", 1, new_secret()).token() + "\n", 0o644)
    with pytest.raises(SourceError, match="chmod 600"):
        SourceCredentials.from_file(path)


def test_a_secret_file_keeps_each_sources_newest_token_and_follows_a_rotation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secret"
    v1, v2 = (SourceCredential("web", n, new_secret()) for n in (1, 2))
    billing = SourceCredential("billing", 1, new_secret())
    write(path, f"# web and billing\n{v1.token()}\n\n{billing.token()}\n")
    credentials = SourceCredentials.from_file(path)
    assert credentials.names == ["billing", "web"] and credentials.get("web") == v1
    time.sleep(0.01)
    write(path, f"{v2.token()}\n{v1.token()}\n{billing.token()}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    credentials._next_look = 0.0  # do not wait for the once-a-second look
    credentials.refresh()
    assert credentials.get("web") == v2
    write(path, "not a token\n")  # a broken edit: keep signing with what worked
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    credentials._next_look = 0.0
    credentials.refresh()
    assert credentials.get("web") == v2


def test_a_secret_file_with_a_bad_line_names_the_line_and_not_its_content(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write(path, SourceCredential("web", 1, new_secret()).token() + "\nlcs1:web:1:SECRETSECRET\n")
    with pytest.raises(SourceError, match="line 2") as caught:
        SourceCredentials.from_file(path)
    assert "SECRETSECRET" not in str(caught.value)
