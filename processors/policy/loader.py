"""Loading the policy directory: every ``*.yaml`` file in it is one complete version, derived
sentence by sentence from the published text. :func:`load_policies` reads them all into a
:class:`~processors.policy.book.PolicyBook`, refusing the whole book with a
:class:`~processors.exceptions.PolicyError` (file, path inside it, reason) on the first file
that is wrong."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, cast

import yaml

from processors.exceptions import PolicyError
from processors.policy.book import PolicyBook
from processors.policy.model import Policy
from processors.policy.reader import PolicyReader


def load_policies(policy_dir: Path) -> PolicyBook:
    """Load and validate every ``*.yaml`` file in ``policy_dir`` (raises PolicyError)."""
    if not policy_dir.is_dir():
        raise PolicyError(policy_dir, [("(directory)", "no such policy directory")])
    files = sorted(policy_dir.glob("*.yaml"))
    if not files:
        raise PolicyError(policy_dir, [("(directory)", "holds no *.yaml policy file")])
    policies: list[Policy] = []
    version_files: dict[str, Path] = {}
    start_files: dict[datetime, Path] = {}
    for path in files:
        policy = load_policy_file(path)
        if policy.version in version_files:
            other = version_files[policy.version].name
            raise PolicyError(path, [("version", f"version {policy.version!r} is also in {other}")])
        if policy.effective_from in start_files:
            other = start_files[policy.effective_from].name
            reason = f"{policy.effective_from.date()} is also the effective_from of {other}"
            raise PolicyError(path, [("effective_from", reason)])
        version_files[policy.version] = path
        start_files[policy.effective_from] = path
        policies.append(policy)
    return PolicyBook(policies)


def load_policy_file(path: Path) -> Policy:
    """Load and validate one policy file (raises PolicyError naming it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(path, [("(file)", f"cannot be read: {exc}")]) from exc
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        raise PolicyError(path, [(where, f"not valid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(path, [("(yaml)", f"not valid YAML: {exc}")]) from exc
    return PolicyReader(path).read(document)


_YamlBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_YamlBase):  # type: ignore[misc]
    """The safe loader, refusing a key written twice in one mapping (YAML keeps the last one
    silently, which in a policy file would drop a rule without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain name", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in this mapping", key_node.start_mark
                )
            seen.add(key)
        return cast(dict[Any, Any], super().construct_mapping(node, deep))


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping
)
