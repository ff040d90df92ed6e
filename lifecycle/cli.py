"""The ``lifecycle`` command line (see CONTRACT.md, "Command line")."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import click

from lifecycle.cli_audit import Moment, audit
from lifecycle.config import Settings, load_settings
from lifecycle.errors import LifecycleError
from lifecycle.logging import configure_logging, get_logger
from lifecycle.runtime import Runtime

EXIT_REFUSED_LINES = 1
EXIT_ERROR = 2


@click.group()
@click.option("--log-level", default="INFO", show_default=True, envvar="LIFECYCLE_LOG_LEVEL")
def cli(log_level: str) -> None:
    """Customer-data privacy policy, enforced on Kafka."""
    configure_logging(log_level.upper())


@contextlib.contextmanager
def bus(settings: Settings, *, start_embedded: bool = False) -> Iterator[Settings]:
    """Settings with a reachable broker: the configured cluster, or (only for ``up``) a fresh
    embedded broker that stops when the block ends."""
    if not settings.embedded:
        yield settings
        return
    if not start_embedded:
        raise click.UsageError(
            "KAFKA_BOOTSTRAP is not set: export the address `lifecycle up` printed "
            "(or your cluster's bootstrap servers)"
        )
    from streams.broker import EmbeddedBroker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_file=settings.data_dir / "broker.log") as broker:  # TANSU_BIN
        # a log line, not a bare print: off a terminal every line of a worker is JSON
        get_logger(__name__).info(
            "broker.embedded",
            bootstrap=broker.bootstrap,
            storage="memory",
            hint=f"in another shell: export KAFKA_BOOTSTRAP={broker.bootstrap}",
        )
        os.environ["KAFKA_BOOTSTRAP"] = broker.bootstrap
        yield settings.with_bootstrap(broker.bootstrap)


@cli.command()
@click.option("--demo", is_flag=True, help="feed sample billing and outage traffic")
def up(demo: bool) -> None:
    """Run the pipeline (embedded broker unless KAFKA_BOOTSTRAP is set)."""
    from lifecycle.observability import Health, Metrics, start_metrics_server
    from processors.worker import build_worker, run_worker, use_event_loop
    from streams.topics import apply_topics

    settings = load_settings()
    use_event_loop(settings.event_loop)  # before anything makes a loop
    health = Health()
    metrics = Metrics(health=health)
    _metrics_server = start_metrics_server(metrics, health)  # logs metrics.listening
    with bus(settings, start_embedded=True) as live:
        runtime = Runtime(live).open()
        apply_topics(live.kafka_client_config(), live.topic_partitions, live.replication)
        app = build_worker(runtime, metrics=metrics, health=health)
        from streams.revocations import RevocationListener

        listener = RevocationListener(live.kafka_client_config(), runtime.codec, runtime.keystore)
        listener.start()
        demo_feed = None
        if demo:
            from lifecycle.demo import start_demo

            demo_feed = start_demo(runtime)
        try:
            run_worker(app, health=health)
        finally:  # before the embedded broker goes away
            if demo_feed is not None:
                demo_feed.stop()
            listener.stop()


@cli.command()
@click.argument("source", type=click.File("rb"))
def publish(source: BinaryIO) -> None:
    """Publish JSON-lines events from SOURCE (a file, or - for stdin)."""
    from processors.rules import RefusalScreen
    from streams.exceptions import PublishError
    from streams.publisher import Publisher, PublishReport

    settings = load_settings()
    report = PublishReport()
    with bus(settings) as live:
        runtime = Runtime(live).open()
        publisher = Publisher(
            live.kafka_client_config(),
            runtime.keystore,
            runtime.codec,
            runtime.policy.vocabulary(),
            delivery_timeout_ms=settings.publish_timeout_ms,
            screen=RefusalScreen(runtime.policy),
        )
        try:
            report = publisher.publish_lines(source, flush=False)
            publisher.flush()
        except PublishError as exc:
            for error in report.errors:
                click.echo(str(error), err=True)
            click.echo(f"error: publishing failed: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        finally:
            publisher.close()
    for error in report.errors:
        click.echo(str(error), err=True)
    click.echo(f"published {report.published}, refused {len(report.errors)}", err=True)
    if report.errors:
        sys.exit(EXIT_REFUSED_LINES)


@cli.group()
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
    from streams.topics import TopicsMismatchError, apply_topics

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


@cli.group()
def keys() -> None:
    """The key store: master-key rotation, and destroying erased keys again after a restore."""


@keys.command("new-master-key")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_new_master_key(path: Path) -> None:
    """Create a new master key file at PATH (mode 0600)."""
    from streams.keys import load_master_key

    if path.exists():
        raise click.UsageError(f"{path} exists; refusing to overwrite a master key")
    load_master_key(path)
    click.echo(f"created {path}", err=True)


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every data key under LIFECYCLE_MASTER_KEY_FILE (the new key), opening those not
    yet re-wrapped with LIFECYCLE_PREVIOUS_MASTER_KEY_FILE (the old one)."""
    settings = load_settings()
    if settings.previous_master_key_file is None:
        raise click.UsageError("set LIFECYCLE_PREVIOUS_MASTER_KEY_FILE to the key being retired")
    count = Runtime(settings).keystore.rotate_master_key()
    click.echo(f"re-wrapped {count} keys under {settings.master_key_file}", err=True)


@keys.command("reshred")
@click.option(
    "--since",
    type=Moment(),
    default=None,
    help="Only revocations at or after this time (the restored backup's; ISO-8601, UTC "
    "without a zone). Default: all of them.",
)
def keys_reshred(since: datetime | None) -> None:
    """Destroy again every key that privacy.key-revocations says was destroyed: run after
    restoring the key store from a backup, before any worker or publisher starts.

    Each revocation destroys again exactly the key versions it names (older records: the keys
    of its customer and categories created before it), so a key made after the erasure (a
    later collection) is kept; a rotation destroyed nothing and is skipped. Safe to repeat."""
    from streams.revocations import REPLAYED, read_revocations, replay

    settings = load_settings()
    runtime = Runtime(settings)
    revocations = destroyed = 0
    for record in read_revocations(settings.kafka_client_config(), runtime.codec):
        if since is not None and record["revoked_at"] < since:
            continue
        revocations += 1
        destroyed += replay(runtime.keystore, record, REPLAYED)
    click.echo(
        f"replayed {revocations} revocations: {destroyed} categories' keys destroyed again",
        err=True,
    )


@click.command("recover")
def audit_recover() -> None:
    """Bring a ledger database restored from a backup forward from privacy.audit: check the
    topic's whole chain and add every record past the database's head (then sign it).

    Run after `lifecycle keys reshred` and before any worker starts; safe to repeat."""
    from sinks.ledger import open_audit_sink
    from sinks.recovery import recover_from_topic

    settings = load_settings()
    runtime = Runtime(settings)
    with open_audit_sink(settings) as sink:
        added = recover_from_topic(settings.kafka_client_config(), runtime.codec, sink)
        seq, _hash = sink.head()
    click.echo(f"added {added} records from privacy.audit; ledger head: seq {seq}", err=True)


def _register_subsystem_commands() -> None:
    """Commands that live beside their subsystem."""
    from lifecycle.cli_events import events
    from lifecycle.cli_policy import policy
    from lifecycle.cli_privacy import COMMANDS

    audit.add_command(audit_recover)
    for command in (policy, audit, events, *COMMANDS):
        cli.add_command(command)


_register_subsystem_commands()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except LifecycleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()

__all__ = ["Path", "cli", "main"]
