"""Assembles a worker process: the Faust app and its agents.

Every worker runs every stage (intake and decisions, retention, ledger) on the partitions the
consumer group gives it; add workers to scale out.
"""

from __future__ import annotations

import faust

from lifecycle.runtime import Runtime
from processors.decisions import DecisionStage
from processors.intake import register_intake
from processors.retention import register_retention
from sinks.audit_stage import register_ledger
from sinks.ledger import open_audit_sink
from streams.app import create_app


def build_worker(runtime: Runtime) -> faust.App:
    app = create_app(runtime.settings)
    stage = DecisionStage(app, runtime)
    register_intake(app, runtime.codec, runtime.keystore, stage.handle)
    register_retention(app, stage, runtime.codec)
    register_ledger(app, runtime, open_audit_sink(runtime.settings))
    return app


def run_worker(app: faust.App, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT; leaves the consumer group cleanly."""
    from faust.worker import Worker

    from lifecycle.logging import stdlib_logging_config

    Worker(
        app, loglevel=loglevel, redirect_stdouts=False, logging_config=stdlib_logging_config()
    ).execute_from_commandline()
