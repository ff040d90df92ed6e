"""The virtual environment the Quix Streams baseline runs in (``.venv-quix`` beside the
project's own): Quix Streams requires confluent-kafka below the pipeline's version, so the two
cannot share one environment. Created on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIX_VENV = REPO / ".venv-quix"
QUIX_REQUIREMENT = "quixstreams==3.28.1"


def quix_python() -> Path:
    """The interpreter of the Quix Streams environment, created and installed when missing."""
    python = QUIX_VENV / "bin" / "python"
    stamp = QUIX_VENV / f".installed-{QUIX_REQUIREMENT}"
    if not stamp.exists():
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", QUIX_REQUIREMENT],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        stamp.touch()
    return python
