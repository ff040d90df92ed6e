"""The docs' house rules: a short README; links that stay inside the repository and resolve;
no dates of runs or commit hashes in the prose (those belong to the changelog and
``bench/history/``); files the docs name exist; every environment variable the code reads,
and every name of the contract, documented."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import yaml
from markdown_docs import (
    README,
    REPO,
    Document,
    every_document,
    manual,
    name,
    parse,
    shell_lines,
    slug,
)

README_MAX_LINES = 250
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
WEB_ADDRESS = re.compile(r"\b(?:https?://|www\.)", re.IGNORECASE)
DATE = re.compile(r"\b(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b")
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
TOP_LEVEL = (
    *("bench", "core", "deploy", "docs", "examples", "lifecycle"),
    *("policy", "processors", "schemas", "sinks", "streams", "tests"),
)
REPO_PATH = re.compile(rf"^(?:{'|'.join(TOP_LEVEL)})/[\w./\-]*$")
GENERATED = ("bench/results/",)
"""Paths that exist only once a command has run (``make bench`` writes its results there)."""
PACKAGES = ("core", "schemas", "streams", "sinks", "processors", "lifecycle")
ENV_NAME = re.compile(r"^(?:KAFKA|SCHEMA_REGISTRY|LIFECYCLE|TANSU)_[A-Z0-9_]+$")


def documents(paths: list[Path]) -> list[Document]:
    return [parse(path) for path in paths]


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    first_block = next(f for f in parse(README).fences if f.info in ("", "sh", "shell"))
    commands = [text.split("#")[0].strip() for _line, text in first_block.lines]
    assert commands == ["make run", "make test"]


# --------------------------------------------------------------------------- links


def external_links() -> Iterator[str]:
    for document in documents(every_document()):
        for line, href in document.links:
            if SCHEME.match(href) or href.startswith("//"):
                yield f"{name(document.path)}:{line}: {href}"
        for line, text in document.prose:
            if WEB_ADDRESS.search(text):
                yield f"{name(document.path)}:{line}: {text.strip()}"


def test_no_document_links_outside_the_repository() -> None:
    found = list(external_links())
    assert not found, f"links outside the repository: {found}"


def broken_links() -> Iterator[str]:
    for document in documents(every_document()):
        for line, href in document.links:
            if SCHEME.match(href) or href.startswith("//"):
                continue  # refused above
            where = f"{name(document.path)}:{line}: {href}"
            target, _, anchor = href.partition("#")
            path = (document.path.parent / target).resolve() if target else document.path
            if not path.is_relative_to(REPO):
                yield f"{where} (outside the repository)"
            elif not path.exists():
                yield f"{where} (no such file)"
            elif anchor and path.suffix == ".md" and anchor not in parse(path).anchors:
                yield f"{where} (no such heading)"


def test_every_relative_link_resolves_to_a_file_and_heading() -> None:
    found = list(broken_links())
    assert not found, f"broken links: {found}"


def test_the_anchors_are_those_github_gives_headings() -> None:
    assert slug("An analyst's or auditor's machine") == "an-analysts-or-auditors-machine"
    assert slug("An event_id is an event's identity") == "an-event_id-is-an-events-identity"
    assert slug("Rotating keys, backups, restore, schema upgrades") == (
        "rotating-keys-backups-restore-schema-upgrades"
    )


# --------------------------------------------------------------------------- prose


def dated_prose() -> Iterator[str]:
    for document in documents(manual()):
        for line, text in document.prose:
            for pattern, what in ((DATE, "a date"), (COMMIT, "a commit hash")):
                match = pattern.search(text)
                if match:
                    yield f"{name(document.path)}:{line}: {what}: {match.group(0)!r}"


def test_no_dates_or_commit_hashes_in_the_prose() -> None:
    """Dated runs and commits belong in CHANGELOG.md and bench/history/; dates in examples are
    written as code."""
    found = list(dated_prose())
    assert not found, f"move these to CHANGELOG.md (or write them as code): {found}"


def test_the_prose_check_sees_dates_and_hashes() -> None:
    assert DATE.search("measured on 2026-11-29, 22:41 UTC")
    assert COMMIT.search("(commit 285cf91)")
    assert not COMMIT.search("Ed25519 and SHA-256, 1000000 keys, a decade")


# --------------------------------------------------------------------------- named files


def named_paths() -> Iterator[tuple[str, str]]:
    for document in documents(manual()):
        where = name(document.path)
        for line, span in document.spans:
            token = span.strip()
            if REPO_PATH.match(token):
                yield f"{where}:{line}", token
        for line, text in shell_lines(document):
            for token in text.split():
                if token.startswith("tests/") and REPO_PATH.match(token):
                    yield f"{where}:{line}", token


def test_every_file_the_docs_name_exists() -> None:
    architecture = REPO / "docs" / "architecture.md"
    missing = []
    for where, token in named_paths():
        if token.startswith(GENERATED):
            continue
        if token.endswith("/") and where.startswith(name(architecture)):
            continue  # the layers are described as packages: the layer contract checks them
        if not (REPO / token.rstrip("/")).exists():
            missing.append(f"{where}: {token}")
    assert not missing, f"no such file or folder: {missing}"


def test_modules_are_named_by_path_only_in_the_architecture() -> None:
    """The manual speaks of commands and behaviour; where code lives is architecture.md's."""
    found = []
    for document in documents(manual()):
        if document.path.name == "architecture.md":
            continue
        for line, span in document.spans:
            if re.match(rf"^(?:{'|'.join(PACKAGES)})/[\w/]+\.py$", span.strip()):
                found.append(f"{name(document.path)}:{line}: {span}")
    assert not found, f"module paths outside docs/architecture.md: {found}"


# --------------------------------------------------------------------------- configuration


def variables_the_code_reads() -> set[str]:
    """Environment variable names written as string constants in the pipeline's packages
    (``env.get("X")``, ``envvar="X"``, mapping keys)."""
    names = set()
    for package in PACKAGES:
        for source in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and ENV_NAME.match(node.value)
                ):
                    names.add(node.value)
    return names


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    read = variables_the_code_reads()
    assert {"KAFKA_BOOTSTRAP", "LIFECYCLE_DB_URL", "LIFECYCLE_DATA_DIR"} <= read
    documented = {span for _line, span in parse(REPO / "docs" / "configuration.md").spans}
    missing = sorted(read - documented)
    assert not missing, f"docs/configuration.md does not list {missing}"


# --------------------------------------------------------------------------- the contract


def contract() -> Document:
    return parse(REPO / "docs" / "contract.md")


def table_column(document: Document, heading: str) -> set[str]:
    """The code spans of the first column of the first table under ``heading``."""
    lines = document.text.splitlines()
    start = next(n for n, line in enumerate(lines) if line.lstrip("#").strip() == heading)
    column: set[str] = set()
    in_table = False
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            in_table = True
            cell = line.split("|")[1].strip()
            if cell.startswith("`") and cell.endswith("`"):
                column.add(cell.strip("`"))
        elif in_table or line.startswith("#"):
            break
    return column


def test_the_contract_names_every_policy_name() -> None:
    spans = {span for _line, span in contract().spans}
    for policy_file in sorted((REPO / "policy").glob("*.yaml")):
        policy = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
        names = {
            *policy["categories"],
            *policy["purposes"],
            *policy["roles"],
            *policy["recipients"],
            *policy["channels"],
            *policy["prohibited_purposes"],
        }
        missing = sorted(names - spans)
        assert not missing, f"docs/contract.md does not name {missing} ({policy_file.name})"


def test_the_contract_lists_exactly_the_reason_codes_and_topics() -> None:
    from processors.reasons import REASON_CODES
    from streams.topics import TOPICS

    document = contract()
    assert table_column(document, "Decisions and reason codes") == set(REASON_CODES)
    assert table_column(document, "On the bus") == {topic.name for topic in TOPICS}
