"""``lifecycle subject report``: a customer's access request answered from the durable stores."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from core.settings import load_settings
from lifecycle.cli.base import json_line
from lifecycle.runtime import Runtime


@click.group()
def subject() -> None:
    """Customers' access requests."""


@subject.command("report")
@click.argument("subject_id")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--role",
    default="privacy_officer",
    show_default=True,
    help="who reads: values are decrypted only for privacy_officer",
)
def subject_report_command(subject_id: str, as_json: bool, role: str) -> None:
    """What is held, used, shared and erased for SUBJECT_ID."""
    from processors.report import subject_report

    runtime = Runtime(load_settings())
    in_force = runtime.policy.in_force(datetime.now(UTC))  # its consent defaults apply today
    report = subject_report(
        runtime.engine, runtime.keystore, subject_id, role=role, policy=in_force
    )
    click.echo(json_line(report.to_dict()) if as_json else report.render())
