"""``lifecycle up``: run the pipeline, with sample traffic on request."""

from __future__ import annotations

import signal
import sys

import click

from core.settings import load_settings
from lifecycle.cli.base import bus
from lifecycle.runtime import Runtime


@click.command()
@click.option("--demo", is_flag=True, help="feed sample billing and outage traffic")
def up(demo: bool) -> None:
    """Run the pipeline (embedded broker unless KAFKA_BOOTSTRAP is set)."""
    # a stop asked for while the worker is still starting ends it cleanly (nothing consumed
    # yet); the worker's own handlers replace this one once it runs
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    from lifecycle.observability import Health, start_metrics_server
    from lifecycle.worker import build_worker, run_worker, use_event_loop
    from processors.metrics import Metrics
    from streams.revocations import RevocationListener
    from streams.topic_admin import apply_topics

    settings = load_settings()
    use_event_loop(settings.event_loop)  # before anything makes a loop
    health = Health()
    metrics = Metrics(health=health)
    _metrics_server = start_metrics_server(metrics, health)  # logs metrics.listening
    with bus(settings, start_embedded=True) as live:
        runtime = Runtime(live).open()
        apply_topics(live.kafka_client_config(), live.topic_partitions, live.replication)
        app = build_worker(runtime, metrics=metrics, health=health)
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
