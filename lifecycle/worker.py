"""Assembles a worker process: the Faust app, its agents, health and metrics.

Every worker runs every stage (intake and decisions, retention, ledger) on the partitions the
consumer group gives it; add workers to scale out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from core.logging import get_logger
from lifecycle.observability import Health
from lifecycle.runtime import Runtime
from processors.audit_stage import LedgerService, LedgerStage
from processors.decisions import DecisionStage
from processors.intake import Intake, register_intake
from processors.metrics import Metrics
from processors.progress import Progress
from processors.retention import register_retention
from sinks.ledger import open_audit_sink
from streams.app import create_app
from streams.outbox import Outbox
from streams.partition_reader import PartitionReader
from streams.topics import CUSTOMER_EVENTS

log = get_logger(__name__)

LAG_INTERVAL = 10.0


def register_decisions(
    app: faust.App, runtime: Runtime, metrics: Metrics
) -> tuple[DecisionStage, Progress, Intake]:
    """The intake and the decision stage behind it, on ``app``."""
    settings = runtime.settings
    outbox = Outbox(settings.kafka_client_config())
    reader = PartitionReader(settings.kafka_consumer_config(), CUSTOMER_EVENTS, label="intake")
    progress = Progress(app, settings.kafka_consumer_config(), reader)
    stage = DecisionStage(app, runtime, metrics, outbox, committed=progress.committed)
    intake = register_intake(
        app,
        Intake(
            app,
            runtime.codec,
            runtime.keystore,
            stage.handle,
            metrics,
            outbox,
            progress,
            reader,
            partitions=settings.topic_partitions,
        ),
    )
    return stage, progress, intake


def build_worker(
    runtime: Runtime, *, metrics: Metrics | None = None, health: Health | None = None
) -> faust.App:
    metrics = metrics or Metrics(process_collector=False)
    health = health or Health()
    app = create_app(runtime.settings)
    stage, progress, intake = register_decisions(app, runtime, metrics)
    register_retention(app, stage, runtime.codec)
    sink = open_audit_sink(runtime.settings)
    ledger = LedgerStage(runtime, sink, metrics, group=f"{app.conf.id}-ledger")
    app.add_dependency(LedgerService(ledger))

    @app.on_rebalance_complete.connect
    async def ready(sender: Any, **_: Any) -> None:  # after table recovery, streams resume
        health.set_ready(True)

    @app.on_partitions_revoked.connect
    async def rebalancing(sender: Any, *_: Any, **__: Any) -> None:
        health.set_ready(False, "rebalancing")

    @app.timer(LAG_INTERVAL, on_leader=False)
    async def report_consumer_lag() -> None:
        try:
            consumer = app.consumer
            committed = progress.committed()
            # the high watermark of the latest fetch (no request; ListOffsets would be one
            # per partition, and the embedded broker answers it short); the intake's reader
            # fetches customer.events, not Faust's consumer
            metrics.consumer_lag(
                {
                    (tp.topic, tp.partition): (
                        (committed.get(tp.partition), intake.highwater(tp.partition))
                        if tp.topic == CUSTOMER_EVENTS
                        else (None, consumer.highwater(tp))
                    )
                    for tp in consumer.assignment()
                }
            )
        except Exception as exc:  # a metric must never stop the worker
            log.warning("metrics.consumer_lag_failed", error=type(exc).__name__)

    return app


def use_event_loop(name: str) -> str:
    """Make ``name`` (``uvloop`` or ``asyncio``) the event loop of every loop created from now
    on, Faust's consumer thread's included; call it before the app exists. The loop in use:
    ``asyncio`` when uvloop is asked for but not installed (it has no Windows build).

    uvloop is the default: Faust's per-event machinery is mostly the event loop's (tasks,
    futures, callbacks), which uvloop runs with less CPU an event (see the benchmarks)."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("event_loop.fallback", wanted="uvloop", using="asyncio")
            name = "asyncio"
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return name
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    return name


def run_worker(
    app: faust.App, *, health: Health | None = None, loglevel: str = "info", quiet: bool = False
) -> None:
    """Run until SIGTERM/SIGINT; leaves the consumer group cleanly. ``quiet``: no banner and
    no start-up spinner on the terminal (the demo prints its own summary there)."""
    from faust.worker import Worker

    from core.logging import stdlib_logging_config

    worker = Worker(
        app,
        loglevel=loglevel,
        redirect_stdouts=False,
        logging_config=stdlib_logging_config(),
        quiet=quiet,
    )
    if quiet:
        worker.spinner = None
    if health is not None:  # beats from the event loop itself, even during table recovery
        health.attach(worker.loop)
    log.info("worker.event_loop", loop=type(worker.loop).__module__.split(".")[0])
    worker.execute_from_commandline()
