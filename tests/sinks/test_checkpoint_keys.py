"""The checkpoint signing key: its files, and what a signature covers."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sinks.checkpoints import (
    CheckpointSigner,
    checkpoint_problem,
    key_id_of,
    load_public_key,
    load_signing_key,
    public_key_path,
)
from sinks.exceptions import SigningKeyError

AT = datetime(2025, 3, 1, 12, tzinfo=UTC)


def test_the_key_is_created_private_with_its_public_half_beside_it(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "ledger-signing.key"
    signer = load_signing_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pub = public_key_path(key_file)
    assert pub == tmp_path / "keys" / "ledger-signing.key.pub"
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert key_id_of(load_public_key(pub)) == signer.key_id
    assert load_signing_key(key_file).key_id == signer.key_id  # the same key next time


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "ledger-signing.key"
    load_signing_key(key_file)
    key_file.chmod(0o640)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        load_signing_key(key_file)


def test_a_public_file_of_another_key_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "ledger-signing.key"
    load_signing_key(key_file)
    other = tmp_path / "other.key"
    load_signing_key(other)
    public_key_path(key_file).write_bytes(public_key_path(other).read_bytes())
    with pytest.raises(SigningKeyError, match="does not hold the public half"):
        load_signing_key(key_file)


def test_a_missing_or_garbled_key_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_signing_key(tmp_path / "absent.key", create=False)
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_public_key(tmp_path / "absent.key.pub")
    garbled = tmp_path / "garbled.key"
    garbled.write_text("not a key")
    garbled.chmod(0o600)
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        load_signing_key(garbled)


def test_a_signature_covers_seq_head_and_time() -> None:
    signer = CheckpointSigner.generate()
    keys = {signer.key_id: signer.public_key}
    checkpoint = signer.sign(10, "a" * 64, AT)
    assert checkpoint.signed_at == "2025-03-01T12:00:00.000Z"
    assert checkpoint_problem(checkpoint, keys) is None
    for forged in (
        replace(checkpoint, seq=11),
        replace(checkpoint, head_hash="b" * 64),
        replace(checkpoint, signed_at="2025-03-02T12:00:00.000Z"),
        replace(checkpoint, signature="zz"),
    ):
        assert "invalid signature" in (checkpoint_problem(forged, keys) or "")
    stranger = CheckpointSigner.generate()
    assert "not one of the given public keys" in (
        checkpoint_problem(stranger.sign(10, "a" * 64, AT), keys) or ""
    )
