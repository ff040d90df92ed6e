"""Envelope encryption: data keys per subject and category, shredding, the master key."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.db import make_engine
from streams.envelope import SHREDDED, decrypt_value, encrypt_value, reveal
from streams.exceptions import DecodeError, KeyShreddedError, KeyStoreError, WrongMasterKeyError
from streams.keys import (
    EnvelopeKeyStore,
    MemoryKeyStore,
    SqlKeyStore,
    Versions,
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


def _sqlite_store_with_keys(tmp_path: Path) -> tuple[Path, SqlKeyStore, list[str], bytes]:
    """A SQLite key store with 50 customers' email keys; the wrapped bytes of the 8th's."""
    db = tmp_path / "k.sqlite"
    store = open_keystore(make_engine(f"sqlite:///{db}"), tmp_path / "master.key")
    refs = [store.subject_ref(f"C-{i}") for i in range(50)]
    store.encryption_keys([(r, "email") for r in refs])
    with store._engine.connect() as conn:
        wrapped = conn.exec_driver_sql(
            "SELECT wrapped_key FROM data_keys WHERE subject_ref = ?", (refs[7],)
        ).scalar_one()
    return db, store, refs, wrapped


def test_shredded_key_bytes_do_not_survive_in_the_sqlite_file(tmp_path: Path) -> None:
    db, store, refs, wrapped = _sqlite_store_with_keys(tmp_path)
    assert wrapped in db.read_bytes() + (
        Path(f"{db}-wal").read_bytes() if Path(f"{db}-wal").exists() else b""
    )
    store.shred(refs[7], None, "subject_erased")
    store.wait_for_wipe()
    store._engine.dispose()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("k.sqlite*"))
    assert wrapped not in on_disk


def test_the_wipe_after_a_shred_lets_other_writers_through_while_a_reader_holds_it_off(
    tmp_path: Path,
) -> None:
    """The log cannot be emptied while a reader holds an older snapshot; meanwhile the
    ledger, the vault and further shreds must still write, and the wipe finishes after."""
    import sqlite3

    db, store, refs, wrapped = _sqlite_store_with_keys(tmp_path)
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM data_keys").fetchall()  # an older snapshot, held
    store.shred(refs[7], None, "subject_erased")
    writer = sqlite3.connect(db, isolation_level=None, timeout=2.0)
    try:
        for n in range(20):  # the wipe keeps trying meanwhile
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE keystore_meta SET value = value WHERE 0 = ?", (n,))
            writer.execute("COMMIT")
            time.sleep(0.02)
        assert store._wiping is not None and not store._wiping.done()  # still held off
    finally:
        writer.close()
        reader.execute("COMMIT")
        reader.close()
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


# --------------------------------------------------------------------------- several versions


def test_a_rotation_ends_the_current_version_without_destroying_it(
    keystore: EnvelopeKeyStore,
) -> None:
    ref = keystore.subject_ref("C-1")
    before = keystore.encryption_keys([(ref, "email"), (ref, "name")])
    old_email = encrypt_value(before[(ref, "email")], "ev-1", "old@example.org")

    ended = keystore.rotate(ref, ["email", "telephone"])

    assert ended == {"email": before[(ref, "email")].version, "telephone": 0}
    after = keystore.encryption_keys([(ref, "email"), (ref, "name")])
    assert after[(ref, "email")].version > ended["email"]  # values after it: a newer version
    assert after[(ref, "name")] == before[(ref, "name")]  # a category not rotated: unchanged
    assert decrypt_value(keystore, "ev-1", ref, old_email) == "old@example.org"  # still live
    live = {(k.category, k.version) for k in keystore.keys_of(ref) if k.shredded_at is None}
    assert ("email", old_email["key_version"]) in live


def test_rotating_every_category_names_each_one_the_subject_has_a_key_of(
    keystore: EnvelopeKeyStore,
) -> None:
    ref = keystore.subject_ref("C-1")
    keys = keystore.encryption_keys([(ref, "email"), (ref, "name"), (ref, "subject_id")])
    keystore.shred(ref, ["name"], "subject_erased")

    ended = keystore.rotate(ref, None)

    assert ended == {
        category: keys[(ref, category)].version for category in ("email", "name", "subject_id")
    }
    # the shredded one needed no reserved number: its next key is newer anyway
    fresh = keystore.encryption_keys([(ref, "name"), (ref, "email")])
    assert fresh[(ref, "name")].version == ended["name"] + 1
    assert fresh[(ref, "email")].version == ended["email"] + 2  # one number was reserved


def test_an_isolated_key_never_becomes_current_and_destroying_it_spares_the_others(
    keystore: EnvelopeKeyStore,
) -> None:
    ref = keystore.subject_ref("C-1")
    current = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    kept = encrypt_value(current, "ev-1", "kept@example.org")

    isolated = keystore.isolated_keys([(ref, "email")])[(ref, "email")]
    refused = encrypt_value(isolated, "ev-2", "refused@example.org")

    assert isolated.version > current.version
    other_process_current = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    assert other_process_current.version == current.version  # cached: still the old one
    keystore.forget(ref)
    newer = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    assert newer.version not in (current.version, isolated.version)  # never the isolated one
    later = encrypt_value(newer, "ev-3", "later@example.org")

    destroyed = keystore.shred_versions(
        ref, {"email": Versions(exactly=frozenset({isolated.version}))}, "role_not_authorized"
    )

    assert destroyed == {"email": [isolated.version]}
    assert reveal(keystore, "ev-2", ref, refused) == SHREDDED
    assert decrypt_value(keystore, "ev-1", ref, kept) == "kept@example.org"
    assert decrypt_value(keystore, "ev-3", ref, later) == "later@example.org"


def test_shredding_versions_up_to_one_spares_the_newer_ones_and_names_only_what_it_destroyed(
    keystore: EnvelopeKeyStore,
) -> None:
    ref = keystore.subject_ref("C-1")
    first = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    before = encrypt_value(first, "ev-1", "before@example.org")
    ended = keystore.rotate(ref, ["email"])["email"]
    second = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    after = encrypt_value(second, "ev-2", "after@example.org")

    assert keystore.shred_versions(ref, {"email": Versions(through=ended)}, "subject_erased") == {
        "email": [first.version]
    }
    assert keystore.shred_versions(ref, {"email": Versions(through=ended)}, "subject_erased") == {}

    assert reveal(keystore, "ev-1", ref, before) == SHREDDED
    assert decrypt_value(keystore, "ev-2", ref, after) == "after@example.org"
    assert keystore.encryption_keys([(ref, "email")])[(ref, "email")] == second


def test_decryption_keys_answers_only_the_versions_the_store_holds_live(
    keystore: EnvelopeKeyStore,
) -> None:
    ref = keystore.subject_ref("C-1")
    live = keystore.encryption_keys([(ref, "email")])[(ref, "email")]
    gone = keystore.encryption_keys([(ref, "name")])[(ref, "name")]
    keystore.shred(ref, ["name"], "subject_erased")

    found = keystore.decryption_keys(
        [(ref, "email", live.version), (ref, "name", gone.version), (ref, "fax", 7)]
    )

    assert found == {(ref, "email", live.version): live}


def test_a_key_read_while_its_customer_is_forgotten_is_used_but_not_cached(
    tmp_path: Path,
) -> None:
    """A rotation heard between a lookup's read of the store and its caching must not leave
    the ended version cached for later values."""
    engine = make_engine(f"sqlite:///{tmp_path / 'k.sqlite'}")
    master = load_master_key(tmp_path / "master.key")

    class HeardMeanwhile(SqlKeyStore):
        def _load_current(self, pairs: Any) -> Any:
            found = super()._load_current(pairs)
            for ref, _ in pairs:
                self.forget(ref)  # the revocation listener's thread, at this moment
            return found

    store = HeardMeanwhile(engine, master)
    ref = store.subject_ref("C-1")
    key = store.encryption_keys([(ref, "email")])[(ref, "email")]

    assert key.version == 1 and store._cache.current(ref, "email") is None
