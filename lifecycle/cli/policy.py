"""``lifecycle policy``: show the policy in force, and check one event against it offline.

The policy directory is ``LIFECYCLE_POLICY_DIR`` (default: the repository's ``policy/``).
Neither command publishes, opens a key store or touches a broker.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from core.errors import LifecycleError
from core.instants import INSTANT
from core.settings import load_settings
from processors.explain import check_event, describe_policy, render_check, render_policy
from processors.policy import PolicyBook, load_policies
from streams.exceptions import ValidationError

EXIT_PUBLISHER_REFUSES = 1
"""``policy check``: the line was judged, but ``lifecycle publish`` would refuse it."""


def _book() -> PolicyBook:
    try:
        return load_policies(load_settings().policy_dir)
    except LifecycleError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(name="policy")
def policy() -> None:
    """The privacy policy as code: show it, check an event against it."""


@policy.command("show")
@click.argument("date", metavar="[DATE]", required=False, type=INSTANT)
@click.option(
    "--at",
    "at",
    metavar="DATE",
    type=INSTANT,
    help="show the version in force then (ISO date or date-time; default: now)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
def show(date: datetime | None, at: datetime | None, as_json: bool) -> None:
    """Print the policy version in force (now, or at DATE: an ISO date or date-time, given
    as an argument or as --at DATE) and all its rules."""
    if date is not None and at is not None and date != at:
        raise click.UsageError("give the date once: as DATE or as --at DATE")
    book = _book()
    when = date or at or datetime.now(UTC)
    version = book.in_force(when)
    if as_json:
        document = {
            "at": when.isoformat(),
            "versions": list(book.versions),
            "policy": describe_policy(version),
        }
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        click.echo(render_policy(version, book, when))


@policy.command("check")
@click.argument("event_json", metavar="EVENT_JSON")
@click.option(
    "--at",
    "at",
    metavar="DATE",
    type=INSTANT,
    help="judge it as if it occurred then (default: its occurred_at, else now)",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON lines of earlier events; those of the same subject_id build its state",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
def check(event_json: str, at: datetime | None, state_file: Path | None, as_json: bool) -> None:
    """Print the decision, reason code, rule and policy version for one event (a JSON line of
    the input format; - reads it from stdin), without publishing anything.

    A line naming a category, purpose or channel the policy does not know is refused by the
    publisher, but another producer may still send such an event: the worker's decision on it
    is printed all the same, with the publisher's refusal, and the exit status is 1."""
    line = sys.stdin.readline() if event_json == "-" else event_json
    book = _book()
    try:
        state_lines = (
            state_file.read_text(encoding="utf-8").splitlines() if state_file is not None else []
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"--state {state_file}: cannot be read: {exc}") from exc
    try:
        result = check_event(line, book, state_lines=state_lines, at=at)
    except ValidationError as exc:
        where = exc.field if exc.field.startswith("state line") else f"EVENT_JSON: {exc.field}"
        raise click.ClickException(
            f"{where}: {exc.message} (the publisher would refuse this line)"
        ) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(render_check(result))
    if result.publisher_refusal is not None:
        click.echo(
            f"EVENT_JSON: {result.publisher_refusal} (the publisher would refuse this line; "
            "printed is the worker's decision on such an event from another producer)",
            err=True,
        )
        sys.exit(EXIT_PUBLISHER_REFUSES)


__all__ = ["policy"]
