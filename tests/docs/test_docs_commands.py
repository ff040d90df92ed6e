"""Every ``lifecycle`` command the docs show is one the command line accepts, every ``make``
target they name exists, and every Python example imports what it uses: the docs cannot
drift from the code.

Commands in shell code blocks are parsed by the real click command tree, options, arguments and
their types included, without being run. Commands quoted inline (``lifecycle erase``) must name
an existing command and only options it has."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from collections.abc import Iterator

import click
import pytest
from markdown_docs import (
    REPO,
    command_lines,
    manual,
    name,
    parse,
    shell_lines,
    simple_commands,
)


def root_command() -> click.Command:
    """The ``lifecycle`` entry point's click command (``main``, or the group it runs)."""
    cli = importlib.import_module("lifecycle.cli")
    for candidate in (getattr(cli, "main", None), getattr(cli, "cli", None)):
        if isinstance(candidate, click.Command):
            return candidate
    raise AssertionError("lifecycle.cli has no click command as main or cli")


def parse_command(args: list[str]) -> list[str]:
    """Parse ``lifecycle ARGS`` down to its last subcommand, as running it would, without
    invoking anything; the chain of command names. Raises click's errors."""
    root = root_command()
    contexts = [root.make_context("lifecycle", list(args), resilient_parsing=False)]
    chain = ["lifecycle"]
    try:
        command = root
        while isinstance(command, click.Group):
            context = contexts[-1]
            rest = [*context._protected_args, *context.args]
            if not rest:
                raise click.UsageError(f"{' '.join(chain)} needs a command", context)
            sub_name, sub, sub_args = command.resolve_command(context, rest)
            assert sub is not None and sub_name is not None
            contexts.append(sub.make_context(sub_name, sub_args, parent=context))
            chain.append(sub_name)
            command = sub
    finally:
        for context in reversed(contexts):
            context.close()  # files click opened for arguments
    return chain


def check_quoted(words: list[str]) -> None:
    """A command quoted in prose: its subcommands exist, and every ``--option`` it names
    belongs to it (or to the groups above it). Arguments and values are not checked."""
    command = root_command()
    options = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
    context = click.Context(command)
    for word in words:
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            if option not in options and option != "--help":
                raise click.UsageError(f"no such option: {option}")
        elif isinstance(command, click.Group):
            sub = command.get_command(context, word)
            if sub is None:
                raise click.UsageError(f"no such command: {word!r}")
            command = sub
            context = click.Context(command, parent=context)
            options |= {o for p in command.params if isinstance(p, click.Option) for o in p.opts}


def shown_commands() -> Iterator[tuple[str, list[str]]]:
    for path in manual():
        for line, args in command_lines(parse(path), "lifecycle"):
            yield f"{name(path)}:{line}", args


def quoted_commands() -> Iterator[tuple[str, list[str]]]:
    for path in manual():
        for line, span in parse(path).spans:
            if span.startswith("lifecycle "):
                yield f"{name(path)}:{line}", shlex.split(span)[1:]


SHOWN = list(shown_commands())
QUOTED = list(quoted_commands())


def test_the_docs_show_the_commands_of_each_user() -> None:
    shown = {" ".join(parse_command(args)[:3]) for _where, args in SHOWN}
    for command in (
        "lifecycle publish",
        "lifecycle erase",
        "lifecycle confirmations",
        "lifecycle subject report",
        "lifecycle audit export",
        "lifecycle audit verify",
        "lifecycle audit replay",
        "lifecycle topics apply",
        "lifecycle up",
    ):
        assert command in shown, f"no code block shows {command}"


@pytest.mark.parametrize(("where", "args"), SHOWN, ids=[where for where, _ in SHOWN])
def test_each_command_in_a_code_block_parses(
    where: str, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # file arguments are named from the repository's root
    try:
        parse_command(args)
    except click.exceptions.Exit as exc:  # --help and the like: parsed, then stopped
        if exc.exit_code != 0:
            pytest.fail(f"{where}: lifecycle {shlex.join(args)}: exit {exc.exit_code}")
    except click.ClickException as exc:
        pytest.fail(f"{where}: lifecycle {shlex.join(args)}: {exc.format_message()}")


@pytest.mark.parametrize(("where", "args"), QUOTED, ids=[where for where, _ in QUOTED])
def test_each_command_quoted_in_prose_exists(where: str, args: list[str]) -> None:
    try:
        check_quoted(args)
    except click.ClickException as exc:
        pytest.fail(f"{where}: lifecycle {shlex.join(args)}: {exc.format_message()}")


def test_an_unknown_command_or_option_fails_the_check() -> None:
    """The check itself refuses what the command line would refuse."""
    for wrong in (
        ["audit", "prove-everything"],
        ["erase", "C-1", "--categorie", "email"],
        ["audit", "export", "--format", "xml"],
        ["confirmations", "--follow", "extra"],
        ["retention", "sweep", "--as-of", "next tuesday"],
        ["subject"],
    ):
        with pytest.raises(click.UsageError):
            parse_command(wrong)
    with pytest.raises(click.UsageError):
        check_quoted(["audit", "verify", "--bundle"])
    with pytest.raises(click.UsageError):
        check_quoted(["sources", "list"])


# --------------------------------------------------------------------------- make targets


def makefile_targets() -> set[str]:
    targets: set[str] = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\- ]+):(?!=)", line)
        if match and not line.startswith((".", "\t")):
            targets.update(match.group(1).split())
    return targets


def named_make_targets() -> Iterator[tuple[str, str]]:
    for path in manual():
        document = parse(path)
        lines = [*shell_lines(document), *document.spans]
        for line, text in lines:
            try:
                commands = simple_commands(text)
            except ValueError:  # a span that is not shell, with an odd quote
                continue
            for words in commands:
                if words[0] == "make":
                    for word in words[1:]:
                        if not word.startswith("-") and "=" not in word:
                            yield f"{name(path)}:{line}", word


def test_every_make_target_the_docs_name_exists() -> None:
    targets = makefile_targets()
    named = list(named_make_targets())
    assert {"run", "test"} <= {target for _where, target in named}
    missing = [f"{where}: make {target}" for where, target in named if target not in targets]
    assert not missing, f"not in the Makefile: {missing}"


# --------------------------------------------------------------------------- python examples


def python_examples() -> Iterator[tuple[str, str]]:
    for path in manual():
        for fence in parse(path).fences:
            if fence.info == "python":
                yield f"{name(path)}:{fence.lines[0][0]}", "\n".join(t for _n, t in fence.lines)


@pytest.mark.parametrize(
    ("where", "source"), list(python_examples()), ids=[w for w, _ in python_examples()]
)
def test_each_python_example_compiles_and_imports_what_it_uses(where: str, source: str) -> None:
    tree = ast.parse(source, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
