"""Signed checkpoints over the ledger's chain head (Ed25519).

A checkpoint says "at ``signed_at`` the ledger's record ``seq`` had hash ``head_hash``", signed
with a key kept apart from the database. Whoever can rewrite the database can recompute every
SHA-256 of the chain, but cannot sign: a rewritten chain no longer matches its checkpoints.

The signed statement is the canonical JSON (sorted keys, no whitespace, UTF-8) of::

    {"head_hash": ..., "key_id": ..., "seq": ..., "signed_at": ...,
     "statement": "lifecycle.audit.checkpoint.v1"}

``signed_at`` is canonical UTC text (see :mod:`sinks.stored`); ``key_id`` is the first 16 hex
digits of the SHA-256 of the raw 32-byte public key, so a verifier holding several public keys
(after a rotation) knows which one to use.

Key files: the private key is PKCS#8 PEM in ``LIFECYCLE_SIGNING_KEY_FILE`` (a file that group
or others may access is refused); its public half is written beside it as ``<file>.pub``
(SubjectPublicKeyInfo PEM), which ``audit verify`` reads. When the file is missing,
:func:`provision_signing_key` decides: beside an embedded SQLite ledger it is created (mode
0600); beside a database server (``LIFECYCLE_DB_URL``, production) only while the ledger is
still empty, and the process refuses to start otherwise (see that function).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.logging import get_logger
from core.secretfiles import create_secret_file
from sinks.exceptions import SigningKeyError
from sinks.stored import utc_text

log = get_logger(__name__)

STATEMENT = "lifecycle.audit.checkpoint.v1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement over the chain head. ``signed_at`` is canonical UTC text."""

    seq: int
    head_hash: str
    signed_at: str
    key_id: str
    signature: str  # hex of the 64-byte Ed25519 signature


def statement_bytes(seq: int, head_hash: str, signed_at: str, key_id: str) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    return orjson.dumps(
        {
            "head_hash": head_hash,
            "key_id": key_id,
            "seq": seq,
            "signed_at": signed_at,
            "statement": STATEMENT,
        }
    )


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CheckpointSigner:
    """Signs checkpoints with one Ed25519 private key."""

    __slots__ = ("_private", "key_id", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def generate(cls) -> CheckpointSigner:
        """A signer with a fresh key held only in memory (tests, demos)."""
        return cls(Ed25519PrivateKey.generate())

    def sign(self, seq: int, head_hash: str, signed_at: datetime) -> Checkpoint:
        at = utc_text(signed_at)
        signature = self._private.sign(statement_bytes(seq, head_hash, at, self.key_id))
        return Checkpoint(seq, head_hash, at, self.key_id, signature.hex())

    def __repr__(self) -> str:
        return f"CheckpointSigner(key_id={self.key_id})"


def checkpoint_problem(
    checkpoint: Checkpoint, public_keys: dict[str, Ed25519PublicKey]
) -> str | None:
    """None when the checkpoint's signature holds under the key it names; else what is wrong."""
    key = public_keys.get(checkpoint.key_id)
    if key is None:
        return (
            f"checkpoint at seq {checkpoint.seq} names signing key {checkpoint.key_id!r}, "
            f"not one of the given public keys ({', '.join(sorted(public_keys))}): forged, "
            "or signed with another key"
        )
    try:
        signature = bytes.fromhex(checkpoint.signature)
        statement = statement_bytes(
            checkpoint.seq, checkpoint.head_hash, checkpoint.signed_at, checkpoint.key_id
        )
        key.verify(signature, statement)
    except (InvalidSignature, ValueError, TypeError):
        return f"checkpoint at seq {checkpoint.seq} has an invalid signature (forged)"
    return None


def checkpoint_due(
    head_seq: int,
    last: tuple[int, str] | None,
    now: datetime,
    every: int,
    interval: timedelta,
) -> bool:
    """Whether the head needs a new checkpoint: ``every`` records or ``interval`` after the last.

    ``last`` is (seq, signed_at text) of the latest checkpoint; with none, any record is due.
    """
    if head_seq <= 0:
        return False
    if last is None:
        return True
    last_seq, last_at = last
    if head_seq <= last_seq:
        return False
    return head_seq - last_seq >= every or now - datetime.fromisoformat(last_at) >= interval


# --------------------------------------------------------------------------- key files


def public_key_path(signing_key_file: Path) -> Path:
    """Where the public half of ``signing_key_file`` lives: ``<file>.pub``."""
    return signing_key_file.with_name(signing_key_file.name + ".pub")


def load_signing_key(path: Path, *, create: bool = True) -> CheckpointSigner:
    """The signer whose private key is in ``path``; created (mode 0600) when absent (a worker
    opens it through :func:`provision_signing_key`, which decides whether it may be).

    Refuses a key file that group or others may access, and a ``.pub`` beside it that does not
    match; writes the ``.pub`` when it is missing.
    """
    if not path.exists():
        if not create:
            raise SigningKeyError(f"signing key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_secret_file(path, pem)  # or another process's key, created first
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"signing key file {path} is accessible to group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise SigningKeyError(f"signing key file {path} is not a PEM private key: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key file {path} is not an Ed25519 key")
    signer = CheckpointSigner(loaded)
    _ensure_public_file(path, signer.public_key)
    return signer


def provision_signing_key(
    path: Path, *, server_database: str | None, ledger_records: Callable[[], int]
) -> CheckpointSigner:
    """The ledger's signer, as a worker opens it at start.

    ``server_database`` names the ledger's database server (password hidden), or is None for
    an embedded SQLite file; ``ledger_records`` counts the records the ledger holds.

    * The key file exists: it is loaded (:func:`load_signing_key`).
    * It is missing beside an embedded SQLite ledger: it is created, as on a first
      ``lifecycle up``; the file sits in the same data directory as the database.
    * It is missing beside a database server and the ledger is empty: the first start of a
      deployment; it is created, and a warning says to keep it in the secret store and give
      every worker the same file.
    * It is missing beside a database server and the ledger holds records: refused, with
      :class:`~sinks.exceptions.SigningKeyError` naming the file and how to provide it. The
      records were signed with a key that must still exist somewhere (an unmounted secret, a
      worker on a new host); a key made up now would sign a second, unrelated series of
      checkpoints that auditors holding the published public key would see as forged.
    """
    if path.exists() or server_database is None:
        return load_signing_key(path)
    held = ledger_records()
    if held:
        raise SigningKeyError(
            f"signing key file {path} does not exist, but the audit ledger in "
            f"{server_database} already holds {held} records signed with the ledger's key. "
            f"Provide that key: restore it from your secret store to {path}, or set "
            "LIFECYCLE_SIGNING_KEY_FILE to where it is (every worker needs the same file). "
            "Only if it is lost for good, create a new one "
            f"(openssl genpkey -algorithm ed25519 -out {path} && chmod 600 {path}) and give "
            "auditors the old and the new public key (audit verify --public-key OLD.pub "
            "--public-key NEW.pub)"
        )
    signer = load_signing_key(path)
    log.warning(
        "ledger.signing_key_created",
        file=str(path),
        public_key=str(public_key_path(path)),
        key_id=signer.key_id,
        database=server_database,
        advice="the ledger was empty; keep this key in your secret store, give every worker "
        "the same file, and publish the .pub to auditors",
    )
    return signer


def _ensure_public_file(path: Path, public_key: Ed25519PublicKey) -> None:
    pub_path = public_key_path(path)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pub_path.exists():
        if key_id_of(load_public_key(pub_path)) != key_id_of(public_key):
            raise SigningKeyError(
                f"{pub_path} does not hold the public half of {path}: move the stale file away"
            )
        return
    tmp = pub_path.with_name(f"{pub_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pem)
    tmp.chmod(0o644)
    os.replace(tmp, pub_path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (a ``.pub`` written beside the signing key)."""
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError as exc:
        raise SigningKeyError(f"public key file {path} does not exist") from exc
    except (ValueError, TypeError, OSError) as exc:
        raise SigningKeyError(f"public key file {path} is not a PEM public key: {exc}") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise SigningKeyError(f"public key file {path} is not an Ed25519 key")
    return loaded
