"""Replaying key revocations after a key-store restore (``lifecycle keys reshred``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from streams.envelope import SHREDDED, encrypt_value, reveal
from streams.keys import MemoryKeyStore, Versions
from streams.revocations import REPLAYED, replay, revocation_record


def test_a_replayed_revocation_destroys_exactly_the_versions_it_names() -> None:
    store = MemoryKeyStore()
    ref = store.subject_ref("C-1")
    before = encrypt_value(store.encryption_keys([(ref, "email")])[(ref, "email")], "e1", "a")
    ended = store.rotate(ref, ["email"])["email"]
    after = encrypt_value(store.encryption_keys([(ref, "email")])[(ref, "email")], "e2", "b")
    record = revocation_record(ref, ["email"], destroyed={"email": Versions(ended)})

    assert replay(store, record, REPLAYED) == 1  # the restored store had it live again

    assert reveal(store, "e1", ref, before) == SHREDDED
    assert reveal(store, "e2", ref, after) == "b"  # made before the worker decided: spared
    assert replay(store, record, REPLAYED) == 0  # safe to repeat


def test_a_rotation_destroyed_nothing_and_is_skipped() -> None:
    store = MemoryKeyStore()
    ref = store.subject_ref("C-1")
    sealed = encrypt_value(store.encryption_keys([(ref, "email")])[(ref, "email")], "e1", "a")
    ended = store.rotate(ref, ["email"])

    assert replay(store, revocation_record(ref, ended, rotated=True), REPLAYED) == 0
    assert reveal(store, "e1", ref, sealed) == "a"


def test_a_revocation_naming_no_versions_destroys_the_keys_made_before_it() -> None:
    store = MemoryKeyStore()
    ref = store.subject_ref("C-1")
    old = encrypt_value(store.encryption_keys([(ref, "name")])[(ref, "name")], "e1", "a")
    store.shred(ref, ["name"], "subject_erased")
    record = {**revocation_record(ref, ["name"]), "revoked_at": datetime.now(UTC)}
    time.sleep(0.01)
    new = encrypt_value(store.encryption_keys([(ref, "name")])[(ref, "name")], "e2", "b")
    store._rows[(ref, "name", 1)][0] = b"restored"  # as a backup brings it back

    assert replay(store, record, REPLAYED) == 1

    assert store._rows[(ref, "name", 1)][0] is None
    assert reveal(store, "e2", ref, new) == "b"
    assert old["key_version"] == 1
