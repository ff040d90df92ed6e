"""The checkpoint signing key: its files, and what a signature covers."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from audit_helpers import make_decision
from structlog.testing import capture_logs

from core.settings import load_settings
from sinks.checkpoints import (
    CheckpointSigner,
    checkpoint_problem,
    key_id_of,
    load_public_key,
    load_signing_key,
    public_key_path,
)
from sinks.exceptions import SigningKeyError
from sinks.ledger import open_audit_sink, verify

from fixtures.broker import run_cli

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


# --------------------------------------------------------------------------- a missing key


def forget_key(key_file: Path) -> None:
    key_file.unlink()
    public_key_path(key_file).unlink()


def test_beside_the_embedded_sqlite_ledger_a_missing_key_is_created(tmp_path: Path) -> None:
    settings = load_settings({"LIFECYCLE_DATA_DIR": str(tmp_path / "data")})
    sink = open_audit_sink(settings)
    first = load_signing_key(settings.signing_key_file, create=False).key_id
    sink.append([make_decision(n) for n in range(1, 4)])
    sink.close()
    forget_key(settings.signing_key_file)

    again = open_audit_sink(settings)  # a laptop's data dir: keep working, with a new key
    again.close()
    assert settings.signing_key_file.exists()
    assert load_signing_key(settings.signing_key_file, create=False).key_id != first


@pytest.mark.postgres
def test_beside_a_database_server_a_missing_key_is_created_only_for_an_empty_ledger(
    tmp_path: Path, postgres_db_url: str
) -> None:
    settings = load_settings(
        {"LIFECYCLE_DATA_DIR": str(tmp_path / "data"), "LIFECYCLE_DB_URL": postgres_db_url}
    )
    key_file = settings.signing_key_file
    with capture_logs() as logs:
        sink = open_audit_sink(settings)  # the first start of a deployment
    created = load_signing_key(key_file, create=False)
    assert [e["key_id"] for e in logs if e["event"] == "ledger.signing_key_created"] == [
        created.key_id
    ]
    sink.append([make_decision(n) for n in range(1, 4)])
    sink.close()
    kept = key_file.read_bytes()
    forget_key(key_file)

    with pytest.raises(SigningKeyError) as refused:
        open_audit_sink(settings)
    message = str(refused.value)
    assert message.startswith(f"signing key file {key_file} does not exist")
    assert "already holds 3 records" in message
    assert "LIFECYCLE_SIGNING_KEY_FILE" in message
    assert f"openssl genpkey -algorithm ed25519 -out {key_file}" in message
    assert not key_file.exists() and not public_key_path(key_file).exists()

    key_file.write_bytes(kept)  # restored from the secret store
    key_file.chmod(0o600)
    restored = open_audit_sink(settings)
    restored.append([make_decision(4)])
    restored.close()
    assert verify(restored.engine, load_public_key(public_key_path(key_file))).ok


@pytest.mark.postgres
@pytest.mark.broker
def test_lifecycle_up_refuses_to_start_without_the_key_of_a_non_empty_ledger(
    tmp_path: Path, postgres_db_url: str, lifecycle_env: dict[str, str]
) -> None:
    env = {**lifecycle_env, "LIFECYCLE_DB_URL": postgres_db_url}
    settings = load_settings(env)
    sink = open_audit_sink(settings)
    sink.append([make_decision(n) for n in range(1, 3)])
    sink.close()
    forget_key(settings.signing_key_file)

    result = run_cli(env, "up", timeout=120)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr[-3000:]
    assert f"error: signing key file {settings.signing_key_file} does not exist" in stderr
    assert "already holds 2 records" in stderr
    assert not settings.signing_key_file.exists()
