"""Key files: created private (0600) and whole, once, even when processes start together."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def create_secret_file(path: Path, content: bytes) -> bool:
    """Write ``content`` to ``path`` with mode 0600 unless ``path`` exists; True when this call
    created it. The file appears complete or not at all (written beside it, then hard-linked
    into place), so a process starting at the same moment never reads a half-written key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False  # another process won the race: its key is the key
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
