"""Assembles a worker process: the Faust app and its agents."""

from __future__ import annotations

import faust

from lifecycle.logging import get_logger
from lifecycle.runtime import Runtime
from processors.intake import Decoded, register_intake
from streams.app import create_app

log = get_logger(__name__)


def build_worker(runtime: Runtime) -> faust.App:
    app = create_app(runtime.settings)

    async def log_decoded(batch: list[Decoded]) -> None:
        for item in batch:
            record = item.record
            log.info("event.decoded", event_id=record["event_id"], kind=record["kind"],
                     subject_ref=record["subject_ref"], partition=item.partition,
                     offset=item.offset)

    register_intake(app, runtime.codec, runtime.keystore, log_decoded)
    return app


def run_worker(app: faust.App, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT; leaves the consumer group cleanly."""
    from faust.worker import Worker

    Worker(app, loglevel=loglevel, redirect_stdouts=False).execute_from_commandline()
