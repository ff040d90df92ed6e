"""Envelope encryption: data keys per subject and category, shredding, the master key."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.db import make_engine
from streams.envelope import SHREDDED, decrypt_value, encrypt_value, reveal
from streams.exceptions import DecodeError, KeyShreddedError, KeyStoreError, WrongMasterKeyError
from streams.keys import (
    EnvelopeKeyStore,
    MemoryKeyStore,
    SqlKeyStore,
    load_master_key,
    open_keystore,
)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def keystore(request: pytest.FixtureRequest, tmp_path: Path) -> EnvelopeKeyStore:
    if request.param == "memory":
        return MemoryKeyStore()
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_db_url")
        return open_keystore(make_engine(url), tmp_path / "master.key")
    return open_keystore(make_engine(f"sqlite:///{tmp_path / 'k.sqlite'}"), tmp_path / "master.key")


def test_a_value_decrypts_only_with_its_event_subject_and_category(
    keystore: EnvelopeKeyStore,
) -> None:
    ref = keystore.subject_ref("C-1")
    key = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    sealed = encrypt_value(key, "ev-1", "jane@example.org")
    assert b"jane" not in sealed["ciphertext"]
    assert decrypt_value(keystore, "ev-1", ref, sealed) == "jane@example.org"
    with pytest.raises(DecodeError, match="fails authentication"):
        decrypt_value(keystore, "ev-2", ref, sealed)  # replayed into another event


def test_subject_ref_is_a_stable_keyed_pseudonym(keystore: EnvelopeKeyStore) -> None:
    ref = keystore.subject_ref("C-10042")
    assert ref == keystore.subject_ref("C-10042") != keystore.subject_ref("C-10043")
    assert len(ref) == 64 and "10042" not in ref
    assert ref != MemoryKeyStore().subject_ref("C-10042")  # keyed: another store, another ref


def test_shredding_makes_every_copy_unreadable_and_a_new_collection_gets_a_new_key(
    keystore: EnvelopeKeyStore,
) -> None:
    ref = keystore.subject_ref("C-1")
    keys = keystore.encryption_keys([(ref, "email"), (ref, "name")])
    email = encrypt_value(keys[(ref, "email")], "ev-1", "jane@example.org")
    name = encrypt_value(keys[(ref, "name")], "ev-1", "Jane")

    assert keystore.shred(ref, ["email"], "subject_erased") == ["email"]

    with pytest.raises(KeyShreddedError):
        decrypt_value(keystore, "ev-1", ref, email)
    assert reveal(keystore, "ev-1", ref, email) == SHREDDED
    assert decrypt_value(keystore, "ev-1", ref, name) == "Jane"
    fresh = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    assert fresh.version == email["key_version"] + 1
    assert reveal(keystore, "ev-1", ref, email) == SHREDDED  # the old value never comes back
    assert keystore.shred(ref, ["email"], "subject_erased") == ["email"]  # the new one goes too
    assert keystore.shred(ref, ["email"], "subject_erased") == []  # nothing left: not an error


def test_shredding_only_keys_created_before_a_moment_spares_later_ones(
    keystore: EnvelopeKeyStore,
) -> None:
    """What ``lifecycle keys reshred`` relies on: replaying an old revocation must not destroy
    the key of a collection made after it."""
    ref = keystore.subject_ref("C-1")
    old = keystore.encryption_keys([(ref, "email"), (ref, "name")])
    old_name = encrypt_value(old[(ref, "name")], "ev-1", "Jane")
    keystore.shred(ref, ["email"], "subject_erased")
    revoked_at = datetime.now(UTC)
    time.sleep(0.01)
    new = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    new_email = encrypt_value(new, "ev-2", "jane@example.org")

    assert keystore.shred(ref, ["email"], "replayed", created_before=revoked_at) == []
    assert decrypt_value(keystore, "ev-2", ref, new_email) == "jane@example.org"
    assert keystore.shred(ref, None, "replayed", created_before=revoked_at) == ["name"]
    assert reveal(keystore, "ev-1", ref, old_name) == SHREDDED
    assert decrypt_value(keystore, "ev-2", ref, new_email) == "jane@example.org"


def test_shredding_in_one_process_stops_decryption_in_another_at_once(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'k.sqlite'}")
    writer = open_keystore(engine, tmp_path / "master.key")
    reader = open_keystore(
        make_engine(f"sqlite:///{tmp_path / 'k.sqlite'}"), tmp_path / "master.key"
    )
    ref = writer.subject_ref("C-1")
    sealed = encrypt_value(writer.encryption_keys([(ref, "email")])[(ref, "email")], "e", "x@y.z")
    assert decrypt_value(reader, "e", ref, sealed) == "x@y.z"  # now cached in the reader
    writer.shred(ref, None, "subject_erased")
    with pytest.raises(KeyShreddedError):  # no revocation heard yet: the store is asked
        decrypt_value(reader, "e", ref, sealed)


def test_shredded_key_bytes_do_not_survive_in_the_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "k.sqlite"
    store = open_keystore(make_engine(f"sqlite:///{db}"), tmp_path / "master.key")
    refs = [store.subject_ref(f"C-{i}") for i in range(50)]
    store.encryption_keys([(r, "email") for r in refs])
    with store._engine.connect() as conn:
        wrapped = conn.exec_driver_sql(
            "SELECT wrapped_key FROM data_keys WHERE subject_ref = ?", (refs[7],)
        ).scalar_one()
    assert wrapped in db.read_bytes() + (
        Path(f"{db}-wal").read_bytes() if Path(f"{db}-wal").exists() else b""
    )
    store.shred(refs[7], None, "subject_erased")
    store.wait_for_wipe()
    store._engine.dispose()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("k.sqlite*"))
    assert wrapped not in on_disk


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_wrong_master_key_is_refused_at_open(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("postgres_db_url")
        if database == "postgresql"
        else f"sqlite:///{tmp_path / 'k.sqlite'}"
    )
    open_keystore(make_engine(url), tmp_path / "right.key")
    with pytest.raises(WrongMasterKeyError, match="does not open this key store"):
        open_keystore(make_engine(url), tmp_path / "other.key")


def test_the_master_key_file_is_created_private_and_refused_when_others_can_read_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "master.key"
    key = load_master_key(path)
    assert len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_master_key(path) == key
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError, match="readable by others"):
        load_master_key(path)
    os.chmod(path, 0o600)
    path.write_text("not base64!\n")
    with pytest.raises(KeyStoreError, match="not base64"):
        load_master_key(path)


def test_unwrapped_keys_are_cached_within_a_bound(tmp_path: Path) -> None:
    store = SqlKeyStore(
        make_engine(f"sqlite:///{tmp_path / 'k.sqlite'}"),
        load_master_key(tmp_path / "m"),
        cache_size=10,
    )
    refs = [store.subject_ref(f"C-{i}") for i in range(30)]
    store.encryption_keys([(r, "name") for r in refs])
    assert len(store._cache) == 10
    store.encryption_keys([(refs[-1], "name")])
    assert store.cache_hits == 1
