"""``lifecycle deadletters``: what ``customer.events.dlq`` holds, and sending records back.

* ``list``: each dead letter's position, when, where it came from, why, and whether it was
  redriven; never its content.
* ``redrive [--offset N ... | --all] [--dry-run]``: open the sealed records, send them back to
  ``customer.events`` and record each redrive on the audit ledger (see
  :mod:`processors.redrive`). Needs the bus, the key store (the quarantine key) and the ledger:
  the same ``LIFECYCLE_*`` settings as the workers.
"""

from __future__ import annotations

import getpass

import click
import orjson

from core.clock import SystemClock
from core.errors import LifecycleError
from core.settings import load_settings
from lifecycle.cli.base import bus, fail
from lifecycle.runtime import Runtime


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's bare uid)
        return "unknown"


@click.group()
def deadletters() -> None:
    """Dead letters: list them, and send them back once their cause is fixed."""


@deadletters.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object a line")
def list_command(as_json: bool) -> None:
    """Every dead letter: offset, when, source position, error, redrive status (no content)."""
    from processors.redrive import ledger_seqs, read_dead_letters

    settings = load_settings()
    try:
        with bus(settings) as live:
            letters = read_dead_letters(live.kafka_consumer_config())
            runtime = Runtime(live)
            redriven = ledger_seqs(runtime.engine, (letter.redrive_id for letter in letters))
    except LifecycleError as exc:
        fail(str(exc))
    for letter in letters:
        status = (
            f"redriven (audit seq {redriven[letter.redrive_id]})"
            if letter.redrive_id in redriven
            else f"failed again after redrive of {letter.redrive_of}"
            if letter.redrive_of
            else "waiting"
        )
        if as_json:
            click.echo(orjson.dumps({**letter.listing(), "status": status}).decode())
        else:
            when = letter.listing()["dead_lettered_at"] or "-"
            click.echo(
                f"{letter.offset:>8}  {when}  {letter.source_position}  {status}  {letter.error}"
            )
    click.echo(f"{len(letters)} dead letters", err=True)


@deadletters.command("redrive")
@click.option(
    "--offset",
    "offsets",
    type=click.IntRange(min=0),
    multiple=True,
    help="the dead letter at this offset of customer.events.dlq (repeatable)",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="every dead letter not yet redriven (except those that failed again after one)",
)
@click.option("--dry-run", is_flag=True, help="say what would be sent back; send nothing")
@click.option("--by", "operator", metavar="NAME", help="who redrives (default: your login)")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="seconds to wait for the workers to record the redrives on the ledger",
)
def redrive_command(
    offsets: tuple[int, ...], everything: bool, dry_run: bool, operator: str | None, wait: float
) -> None:
    """Send dead letters back to customer.events, each recorded on the audit ledger.

    Safe to repeat: a dead letter already redriven, or whose event is already decided, is
    skipped. A record that fails again is dead-lettered again with its new error.
    """
    from processors.redrive import (
        check_operator,
        plan_redrive,
        read_dead_letters,
        redrive,
        wait_until_recorded,
    )

    if bool(offsets) == everything:
        raise click.UsageError("give --offset N (one or more) or --all")
    settings = load_settings()
    try:
        who = check_operator(operator or _operator())
        with bus(settings) as live:
            runtime = Runtime(live).open()
            letters = read_dead_letters(live.kafka_consumer_config())
            wanted = set(offsets) if offsets else None
            if wanted is not None:
                missing = wanted - {letter.offset for letter in letters}
                if missing:
                    fail(f"no dead letter at offset(s) {', '.join(map(str, sorted(missing)))}")
            plans = plan_redrive(
                letters,
                offsets=wanted,
                keystore=runtime.keystore,
                codec=runtime.codec,
                engine=runtime.engine,
            )
            for plan in plans:
                verb = ("would redrive" if dry_run else "redrive") if plan.redriving else "skip"
                click.echo(f"{plan.letter.offset:>8}  {verb}: {plan.reason}")
            if dry_run:
                return
            now = SystemClock()()
            sent = redrive(
                plans,
                client_config=live.kafka_client_config(),
                codec=runtime.codec,
                operator=who,
                policy_version=runtime.policy.in_force(now).version,
            )
            recorded = wait_until_recorded(runtime.engine, plans, wait) if sent else {}
    except LifecycleError as exc:
        fail(str(exc))
    click.echo(f"redriven {sent}, skipped {len(plans) - sent}", err=True)
    if sent and len(recorded) < sent:
        click.echo(
            f"note: {sent - len(recorded)} redrive record(s) not yet on the ledger after "
            f"{wait:.0f} s: the workers record them when they run",
            err=True,
        )


__all__ = ["deadletters"]
