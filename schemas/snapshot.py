"""Record a released version of every topic schema that changed: ``python -m schemas.snapshot``.

Writes ``history/<name>.v<N>.avsc`` (self-contained canonical form) for each topic record whose
current schema differs from its newest snapshot. The test suite fails until this has been run
for a changed schema, and proves that every snapshot still decodes into the current schema.
"""

from __future__ import annotations

import json
import re

from schemas import HISTORY_DIR, TOPIC_RECORDS
from schemas.files import load_topic_schema, schema_json

_VERSION = re.compile(r"\.v(\d+)\.avsc$")


def snapshots(name: str) -> list[tuple[int, str]]:
    """(version, canonical schema text) of every snapshot of ``name``, oldest first."""
    found = []
    for path in HISTORY_DIR.glob(f"{name}.v*.avsc"):
        match = _VERSION.search(path.name)
        if match:
            found.append(
                (int(match.group(1)), json.dumps(json.loads(path.read_text()), sort_keys=True))
            )
    return sorted(found)


def main() -> None:
    HISTORY_DIR.mkdir(exist_ok=True)
    for name in TOPIC_RECORDS:
        current = schema_json(load_topic_schema(name))
        history = snapshots(name)
        if history and history[-1][1] == current:
            continue
        version = history[-1][0] + 1 if history else 1
        path = HISTORY_DIR / f"{name}.v{version}.avsc"
        path.write_text(json.dumps(json.loads(current), indent=2, sort_keys=True) + "\n")
        print(f"wrote {path.relative_to(HISTORY_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
