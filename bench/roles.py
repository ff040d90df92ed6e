"""Helper processes the benchmarks start (``python -m bench.roles ROLE ...``), so that what is
measured runs alone in its process, as in production: a Faust worker (the bare pass-through
agent, the decision stage, or the whole pipeline), background traffic at a fixed rate, and the
key-store probe.

Workers print ``READY <json>`` on stdout after every rebalance, naming the partitions of
``customer.events`` they were given, so the benchmark starts its clock only once the group is
settled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from core.settings import load_settings
from streams.topics import CUSTOMER_EVENTS

PASSTHROUGH_TOPIC = "bench.passthrough"
WORKER_MODES = ("passthrough", "decide", "pipeline")


def _setting(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def worker(mode: str, overrides: dict[str, Any], loop: str | None) -> None:
    """Run one Faust worker until SIGTERM."""
    import faust

    from core.logging import configure_logging
    from lifecycle.runtime import Runtime
    from lifecycle.worker import build_worker, register_decisions, run_worker, use_event_loop
    from processors.metrics import Metrics
    from streams.app import create_app

    # as `lifecycle up` does; and at "info", like it: at "warning" or above, Faust's worker
    # turns the root logger to DEBUG for its terminal spinner, and every debug call in Faust
    # and aiokafka then builds a log record (about a fifth of a bare agent's time)
    configure_logging(os.environ.get("LIFECYCLE_LOG_LEVEL", "INFO"))
    settings = load_settings()
    use_event_loop(loop or settings.event_loop)  # as `lifecycle up` does, unless --loop says
    app: faust.App
    if mode == "passthrough":
        app = create_app(settings, app_id="bench-passthrough", **overrides)
        source = app.topic(CUSTOMER_EVENTS, key_type=bytes, value_type=bytes)
        out = app.topic(PASSTHROUGH_TOPIC, key_type=bytes, value_type=bytes)

        @app.agent(source, name="bench.passthrough")
        async def passthrough(stream: Any) -> None:
            async for key, value in stream.items():
                await out.send(key=key, value=value)

    elif mode == "decide":
        runtime = Runtime(settings).open()
        app = create_app(settings, **overrides)
        register_decisions(app, runtime, Metrics(process_collector=False))
    else:
        if overrides:
            raise SystemExit("settings overrides apply to passthrough and decide only")
        app = build_worker(Runtime(settings).open())

    @app.on_rebalance_complete.connect
    async def ready(sender: Any, **_: Any) -> None:
        assigned = sorted(
            tp.partition for tp in app.consumer.assignment() if tp.topic == CUSTOMER_EVENTS
        )
        print("READY " + json.dumps({"assigned": assigned}), flush=True)

    run_worker(app, loglevel="info")


def traffic(rate: float, subjects: int, seed: int) -> None:
    """Publish traffic events through the real publisher at ``rate`` a second, until SIGTERM."""
    from lifecycle.runtime import Runtime
    from lifecycle.traffic import Traffic

    runtime = Runtime(load_settings()).open()
    publisher = runtime.publisher(listen_for_revocations=True)
    events = Traffic(subjects, seed=seed).events(sys.maxsize)
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    began = time.monotonic()
    sent = 0
    print("STARTED", flush=True)
    while True:
        lines = [json.dumps(next(events)) for _ in range(per_tick)]
        publisher.publish_lines(lines, flush=False)
        sent += per_tick
        pause = began + sent / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.roles")
    roles = parser.add_subparsers(dest="role", required=True)
    w = roles.add_parser("worker")
    w.add_argument("--mode", choices=WORKER_MODES, required=True)
    w.add_argument("--setting", action="append", default=[], type=_setting, metavar="NAME=JSON")
    w.add_argument("--loop", choices=("asyncio", "uvloop"), default=None, help="default: as up")
    t = roles.add_parser("traffic")
    t.add_argument("--rate", type=float, required=True)
    t.add_argument("--subjects", type=int, default=10_000)
    t.add_argument("--seed", type=int, default=13)
    k = roles.add_parser("keys")
    k.add_argument("--db", required=True)
    k.add_argument("--master-key", required=True)
    k.add_argument("--subjects", type=int, required=True)
    k.add_argument("--lookups", type=int, required=True)
    k.add_argument("--misses", type=int, required=True)
    args = parser.parse_args(argv)
    if args.role == "worker":
        worker(args.mode, dict(args.setting), args.loop)
    elif args.role == "traffic":
        traffic(args.rate, args.subjects, args.seed)
    else:
        from bench.keys import probe

        print("RESULT " + json.dumps(probe(args)), flush=True)


if __name__ == "__main__":
    main()
