"""``lifecycle up``: run the pipeline, with sample traffic on request."""

from __future__ import annotations

import os
import signal
import sys

import click

from core.logging import configure_logging, get_logger
from core.settings import load_settings
from lifecycle.cli.base import bus
from lifecycle.runtime import Runtime


@click.command()
@click.option("--demo", is_flag=True, help="feed sample billing and outage traffic")
@click.option(
    "--console",
    "with_console",
    is_flag=True,
    help="also serve the privacy team's console on 127.0.0.1:8080 (LIFECYCLE_CONSOLE_PORT)",
)
def up(demo: bool, with_console: bool) -> None:
    """Run the pipeline (embedded broker unless KAFKA_BOOTSTRAP is set).

    With --demo the terminal shows a short summary of the decisions instead of every log
    line (libraries' at WARNING); without it, every line is JSON, for production."""
    # a stop asked for while the worker is still starting ends it cleanly (nothing consumed
    # yet); the worker's own handlers replace this one once it runs
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    from sqlalchemy.exc import SQLAlchemyError

    from lifecycle.observability import Health, start_metrics_server
    from lifecycle.worker import build_worker, run_worker, use_event_loop
    from processors.metrics import Metrics
    from streams.revocations import RevocationListener
    from streams.sources import BUILTIN_SOURCES
    from streams.topic_admin import apply_topics

    if demo:
        configure_logging("WARNING")
    settings = load_settings()
    use_event_loop(settings.event_loop)  # before anything makes a loop
    health = Health()
    metrics = Metrics(health=health)
    _metrics_server = start_metrics_server(metrics, health)  # logs metrics.listening
    with bus(settings, start_embedded=True) as live:
        runtime = Runtime(live).open()
        for name in BUILTIN_SOURCES:  # so that `sources list` shows them from the start
            try:
                runtime.sources.ensure_builtin(name)
            except SQLAlchemyError as exc:  # a worker's role may only read the registry
                get_logger(__name__).warning(
                    "sources.builtin_not_registered", source=name, error=type(exc).__name__
                )
        apply_topics(live.kafka_client_config(), live.topic_partitions, live.replication)
        app = build_worker(runtime, metrics=metrics, health=health)
        listener = RevocationListener(live.kafka_client_config(), runtime.codec, runtime.keystore)
        listener.start()
        demo_feed = summary = beside = None
        if demo:
            from lifecycle.demo import start_demo_with_summary

            demo_feed, summary = start_demo_with_summary(runtime, metrics)
        if with_console:
            from lifecycle.console.serve import start_beside

            beside = start_beside(
                runtime,
                port=int(os.environ.get("LIFECYCLE_CONSOLE_PORT") or 8080),
                on_filed=summary.filed if summary is not None else lambda _request_id: None,
            )
        try:
            run_worker(app, health=health, loglevel="warning" if demo else "info", quiet=demo)
        finally:  # before the embedded broker goes away
            for running in (demo_feed, summary, beside):
                if running is not None:
                    running.stop()
            listener.stop()
