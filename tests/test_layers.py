"""The layer contract (``[tool.importlinter]`` in pyproject.toml), checked by ``lint-imports``:
each package imports only those below it (lifecycle > processors > sinks > streams > schemas
> core), the CLI's command modules stand on their shared base without importing each other,
and no package's modules import each other in a circle.

A contract that could not fail would prove nothing, so a copy of the source tree with one
deliberate back-edge is checked too: it must be refused, naming the offending import.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "schemas", "streams", "sinks", "processors", "lifecycle")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_source_tree_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "back_edge", "named"),
    [
        ("streams/codec.py", "import processors.rules", "streams.codec -> processors.rules"),
        ("core/settings.py", "import lifecycle.runtime", "core.settings -> lifecycle.runtime"),
        (
            "lifecycle/cli/base.py",
            "import lifecycle.cli.audit",
            "lifecycle.cli.base -> lifecycle.cli.audit",
        ),
    ],
    ids=[
        "streams-imports-processors",
        "core-imports-the-application",
        "cli-base-imports-a-command",
    ],
)
def test_a_deliberate_back_edge_breaks_the_contract(
    tmp_path: Path, module: str, back_edge: str, named: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    source = tmp_path / module
    source.write_text(source.read_text() + f"\n{back_edge}  # noqa: E402\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert named in result.stdout, result.stdout
