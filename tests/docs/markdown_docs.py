"""The project's Markdown documents, parsed once (markdown-it, CommonMark with tables): their
code blocks, code spans, links, headings and prose, each with the line it is on."""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CHANGELOG = REPO / "CHANGELOG.md"
DEPLOY_GUIDE = REPO / "deploy" / "README.md"


def manual() -> list[Path]:
    """The documents held to the docs' rules: README, docs/ and the deployment guide."""
    return [README, *sorted((REPO / "docs").glob("*.md")), DEPLOY_GUIDE]


def every_document() -> list[Path]:
    """Every Markdown document whose links must stay inside the repository."""
    return [*manual(), CHANGELOG]


def name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@dataclass(frozen=True, slots=True)
class Fence:
    info: str
    lines: list[tuple[int, str]]
    """(line number in the document, text) of each line inside the fence."""


@dataclass(slots=True)
class Document:
    path: Path
    text: str
    fences: list[Fence] = field(default_factory=list)
    spans: list[tuple[int, str]] = field(default_factory=list)
    """Inline code spans: (line, content)."""
    links: list[tuple[int, str]] = field(default_factory=list)
    """Link targets: (line, href)."""
    prose: list[tuple[int, str]] = field(default_factory=list)
    """Text outside code: (line, text)."""
    anchors: set[str] = field(default_factory=set)
    """The ids GitHub gives the document's headings."""


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


@functools.cache
def parse(path: Path) -> Document:
    text = path.read_text(encoding="utf-8")
    document = Document(path, text)
    tokens = _parser().parse(text)
    seen: dict[str, int] = {}
    heading = False
    for token in tokens:
        line = (token.map[0] + 1) if token.map else 0
        if token.type in ("fence", "code_block"):
            first = line + (1 if token.type == "fence" else 0)
            body = token.content.splitlines()
            document.fences.append(
                Fence(token.info.strip(), [(first + n, text) for n, text in enumerate(body)])
            )
        elif token.type == "heading_open":
            heading = True
        elif token.type == "inline":
            _inline(document, token, line, seen if heading else None)
            heading = False
    return document


def _inline(document: Document, token: Token, line: int, headings: dict[str, int] | None) -> None:
    title = []
    at = line
    for child in token.children or []:
        if child.type in ("softbreak", "hardbreak"):
            at += 1
        elif child.type == "code_inline":
            document.spans.append((at, child.content))
            title.append(child.content)
        elif child.type == "link_open":
            document.links.append((at, str(child.attrGet("href") or "")))
        elif child.type == "text":
            document.prose.append((at, child.content))
            title.append(child.content)
    if headings is not None:
        anchor = slug("".join(title))
        count = headings.get(anchor, 0)
        headings[anchor] = count + 1
        document.anchors.add(anchor if count == 0 else f"{anchor}-{count}")


# --------------------------------------------------------------------------- shell lines

SHELL_FENCES = {"", "sh", "bash", "shell", "console"}
SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECTS = {">", ">>", "<", "2>", "&>"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def shell_lines(document: Document) -> Iterator[tuple[int, str]]:
    """Every command line of the document's shell fences (a console fence's ``$`` lines only),
    continuation lines joined."""
    for fence in document.fences:
        if fence.info not in SHELL_FENCES:
            continue
        pending: tuple[int, str] | None = None
        for number, raw in fence.lines:
            text = raw.strip()
            if fence.info == "console":
                if not text.startswith("$ "):
                    continue
                text = text[2:]
            if pending is not None:
                number, text = pending[0], f"{pending[1]} {text}"
                pending = None
            if text.endswith("\\"):
                pending = (number, text[:-1])
                continue
            if text and not text.startswith("#"):
                yield number, text


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: words split as the shell does, comments,
    redirections and leading variable assignments left out."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    skip = False
    for word in lexer:
        if skip:
            skip = False
        elif word in SEPARATORS:
            commands.append([])
        elif word in REDIRECTS:
            skip = True
        elif commands[-1] or not ASSIGNMENT.match(word):
            commands[-1].append(word)
    return [command for command in commands if command]


def command_lines(document: Document, program: str) -> Iterator[tuple[int, list[str]]]:
    """(line, arguments) of every invocation of ``program`` in the document's shell fences."""
    for number, line in shell_lines(document):
        for words in simple_commands(line):
            if words[0] == program or words[0].endswith(f"/{program}"):
                yield number, words[1:]
