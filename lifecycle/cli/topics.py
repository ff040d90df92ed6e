"""``lifecycle topics``: create the contract's topics and keep them at their settings."""

from __future__ import annotations

import click

from core.settings import load_settings
from lifecycle.cli.base import bus


@click.group()
def topics() -> None:
    """Topic administration."""


@topics.command("apply")
@click.option("--partitions", type=int, default=None, help="default: LIFECYCLE_PARTITIONS (4)")
@click.option(
    "--replication",
    type=click.IntRange(min=1),
    default=None,
    help="default: LIFECYCLE_REPLICATION, else the broker's default.replication.factor",
)
@click.option(
    "--grow-partitions",
    is_flag=True,
    help="add partitions to keyed topics that have fewer (stop the workers first)",
)
def topics_apply(partitions: int | None, replication: int | None, grow_partitions: bool) -> None:
    """Create the contract's topics and bring existing ones to their settings (idempotent)."""
    from streams.topic_admin import TopicsMismatchError, apply_topics

    settings = load_settings()
    with bus(settings) as live:
        try:
            outcome = apply_topics(
                live.kafka_client_config(),
                partitions or live.topic_partitions,
                replication or live.replication,
                grow_partitions=grow_partitions,
            )
        except TopicsMismatchError as exc:
            for name, state in exc.outcome.items():
                click.echo(f"{name}: {state}")
            raise
    for name, state in outcome.items():
        click.echo(f"{name}: {state}")
    if all(state == "unchanged" for state in outcome.values()):
        click.echo("nothing to change", err=True)
