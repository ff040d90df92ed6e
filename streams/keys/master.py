"""The master key (key-encryption key): 32 random bytes in a file of its own, created with mode
0600 on first use; a file that others can read is refused."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.secretfiles import create_secret_file
from streams.exceptions import KeyStoreError
from streams.keys.base import KEY_LEN


def load_master_key(path: Path, *, create: bool = True) -> bytes:
    """Read the 32-byte master key from ``path``; create it (mode 0600) when absent."""
    if not path.exists():
        if not create:
            raise KeyStoreError(f"master key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        if create_secret_file(path, base64.b64encode(key) + b"\n"):
            return key
        return load_master_key(path, create=False)  # another process created it first
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(
            f"master key file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            "run: chmod 600 " + str(path)
        )
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (ValueError, OSError) as exc:
        raise KeyStoreError(f"master key file {path} is not base64 text: {exc}") from exc
    if len(key) != KEY_LEN:
        raise KeyStoreError(f"master key file {path} holds {len(key)} bytes, expected 32")
    return key
