"""Master-key rotation: every data key re-wrapped, nothing shredded comes back."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.db import make_engine
from streams.envelope import decrypt_value, encrypt_value
from streams.exceptions import KeyShreddedError, WrongMasterKeyError
from streams.keys import load_master_key, open_keystore


def test_rotation_rewraps_every_live_key_and_retires_the_old_master_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.sqlite'}"
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    before = open_keystore(make_engine(url), old)
    refs = [before.subject_ref(f"C-{i}") for i in range(30)]
    keys = before.encryption_keys([(r, "email") for r in refs])
    sealed = {
        r: encrypt_value(keys[(r, "email")], "e", f"{i}@example.org") for i, r in enumerate(refs)
    }
    before.shred(refs[0], None, "subject_erased")
    load_master_key(new)

    during = open_keystore(make_engine(url), new, old)  # workers hold both during a rotation
    assert decrypt_value(during, "e", refs[5], sealed[refs[5]]) == "5@example.org"
    assert during.rotate_master_key(batch=7) == 29 + 2  # live data keys + the store's own
    assert during.rotate_master_key() == 0  # idempotent

    after = open_keystore(make_engine(url), new)  # the old key is no longer needed
    assert after.subject_ref("C-3") == before.subject_ref("C-3")
    assert all(
        decrypt_value(after, "e", r, sealed[r]) == f"{i}@example.org"
        for i, r in enumerate(refs)
        if i
    )
    with pytest.raises(KeyShreddedError):
        decrypt_value(after, "e", refs[0], sealed[refs[0]])
    with pytest.raises(WrongMasterKeyError):
        open_keystore(make_engine(url), old)
