"""decide: a worker consuming ``customer.events`` and publishing one decision per event on
``privacy.decisions`` (intake batches, decoding, every policy check, the per-subject table and
its changelog, vault copies of collected values): the decision stage of ``lifecycle up``
without the ledger stage (measured apart, see ``ledger``).

Baselines, on the same broker in the same run, each sending every record it reads to another
topic: a bare Faust agent on the same app settings (``async for key, value in
stream.items(): await out.send(...)``), Faust's own per-event cost; and a bare Quix Streams
application (``app.dataframe(source).to_topic(out)``, :mod:`bench.quix_passthrough`, in its
own virtual environment), the Python stream processor on librdkafka a team would compare
with. Two workers are also judged against one: how the decision stage scales on the cores.
All run as separate processes over the same records (published once through the real
publisher), first one worker, then one worker per core (two in one group), then three in one
group (more workers than cores: the group's throughput when a deployment scales past the
machine; full size only, in the first round). At full size the workloads take turns for
:data:`ROUNDS` rounds and each figure is its median. The clock starts when
the group is settled and the records are produced all at once; the rate is taken from the
output records' broker timestamps between their 10th and 90th percentile (no start-up,
no last partial batch). The Quix application starts after the records are on the topic (it
has no rebalance hook to wait for), and its CPU is counted from its first processed record.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.base import Row, Scale, Target
from bench.environment import (
    PARTITIONS,
    BenchEnv,
    Child,
    children,
    create_topic,
    produce_all,
    raw_producer,
    read_records,
    steady_rate,
)
from bench.quix_env import quix_python
from bench.roles import PASSTHROUGH_TOPIC
from bench.workload import traffic_lines
from lifecycle.runtime import Runtime
from lifecycle.traffic import traffic_credentials
from streams.topics import CUSTOMER_EVENTS, DECISIONS

NAME = "decide"
ROUNDS = 3
"""Rounds at full size: every figure is the median of its rounds, which alternate between
the workloads, so that a slower minute of a shared machine does not decide a ratio."""
Record = tuple[bytes, bytes, int]
QUIX_APP = Path(__file__).resolve().with_name("quix_passthrough.py")


def run(env: BenchEnv, scale: Scale, settings: tuple[str, ...] = ()) -> list[Row]:
    data = env.folder(NAME)
    records = encoded_events(env, data, scale.pick(60_000, 1_500), scale.pick(10_000, 300))
    rounds: dict[tuple[str, int], list[dict[str, float]]] = {}
    quix_rounds: list[dict[str, float]] = []
    for round_ in range(scale.pick(ROUNDS, 1)):
        # the third group is measured once: it has no target
        for workers in (1, 2) if scale.tiny or round_ else (1, 2, 3):
            for mode in ("passthrough", "decide"):
                rounds.setdefault((mode, workers), []).append(
                    measure(env, data, mode, workers, records, settings)
                )
        quix_rounds.append(measure_quix(env, data, records))
    measured = {what: _median(runs) for what, runs in rounds.items()}
    quix = _median(quix_rounds)
    one, bare_one = measured[("decide", 1)], measured[("passthrough", 1)]
    two, bare_two = measured[("decide", 2)], measured[("passthrough", 2)]
    notes = {"events": len(records), "partitions": PARTITIONS, "rounds": len(quix_rounds)}
    rows = [
        Row(
            NAME,
            "consume -> decision published, 1 worker",
            "events/s",
            one["rate"],
            bare_one["rate"],
            "bare Faust pass-through agent, 1 worker",
            Target("ratio_at_least", 1.5),
            {**notes, "cpu_us_per_event": one["cpu_us"], "bare_cpu_us": bare_one["cpu_us"]},
        ),
        Row(
            NAME,
            "consume -> decision published, 1 worker, against Quix Streams",
            "events/s",
            one["rate"],
            quix["rate"],
            "bare Quix Streams pass-through application, 1 process",
            Target("ratio_at_least", 0.25),
            {**notes, "cpu_us_per_event": one["cpu_us"], "quix_cpu_us": quix["cpu_us"]},
        ),
        Row(
            NAME,
            "consume -> decision published, 2 workers (1 per core) against 1",
            "events/s",
            two["rate"],
            one["rate"],
            "decision stage, 1 worker",
            Target("ratio_at_least", 1.6),
            {
                **notes,
                "cpu_us_per_event": two["cpu_us"],
                "bare_2_workers_events_per_s": bare_two["rate"],
                "bare_cpu_us": bare_two["cpu_us"],
            },
        ),
    ]
    if ("decide", 3) in measured:
        three, bare_three = measured[("decide", 3)], measured[("passthrough", 3)]
        rows.append(
            Row(
                NAME,
                "consume -> decision published, 3 workers in one group (2 cores)",
                "events/s",
                three["rate"],
                bare_three["rate"],
                "bare Faust pass-through agent, 3 workers",
                None,
                {**notes, "cpu_us_per_event": three["cpu_us"], "bare_cpu_us": bare_three["cpu_us"]},
            )
        )
    return rows


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each measure's median over ``runs``."""
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def encoded_events(env: BenchEnv, data: Path, count: int, subjects: int) -> list[Record]:
    """Traffic published once through the real publisher: (key, value, partition) records."""
    with env.broker(f"{NAME}-source") as bootstrap:
        settings = env.settings(bootstrap, data)
        runtime = Runtime(settings).open()
        publisher = runtime.publisher(
            credentials=traffic_credentials(runtime.sources), listen_for_revocations=False
        )
        try:
            publisher.publish_lines(traffic_lines(count, subjects))
        finally:
            publisher.close()
        del publisher
        published = read_records(bootstrap, CUSTOMER_EVENTS, count)
        return [(m.key(), m.value(), m.partition()) for m in published]


def settled(workers: list[Child]) -> bool:
    """Every worker's latest assignment is known and together they hold each partition once."""
    latest = []
    for worker in workers:
        ready = [line.split("READY ", 1)[1] for line in worker.lines if "READY " in line]
        if not ready:  # (Faust may put a terminal control sequence before the word)
            return False
        latest.append(json.loads(ready[-1])["assigned"])
    held = [p for assigned in latest for p in assigned]
    return all(latest) and sorted(held) == list(range(PARTITIONS))


def measure(
    env: BenchEnv,
    data: Path,
    mode: str,
    workers: int,
    records: list[Record],
    settings: tuple[str, ...] = (),
) -> dict[str, float]:
    """Rate (events/s) and worker CPU (microseconds an event) of ``workers`` workers."""
    label = f"{NAME}-{mode}-{workers}"
    out_topic = PASSTHROUGH_TOPIC if mode == "passthrough" else DECISIONS
    with env.broker(label) as bootstrap, children() as started:
        if mode == "passthrough":
            create_topic(bootstrap, PASSTHROUGH_TOPIC, PARTITIONS)
        process_env = env.process_env(bootstrap, data)
        extra = [arg for setting in settings for arg in ("--setting", setting)]
        for n in range(workers):
            log = env.folder("logs") / f"{label}-{n}.log"
            started.append(Child(["worker", "--mode", mode, *extra], process_env, log))
        for child in started:
            child.wait_for(lambda _lines: settled(started), 120, f"{label}: group settled")
        cpu_before = sum(child.cpu_seconds() for child in started)
        produce_all(raw_producer(bootstrap), CUSTOMER_EVENTS, records)
        stamps = read_records(
            bootstrap, out_topic, len(records), timeout=60 + len(records) / 500, values=False
        )
        cpu = sum(child.cpu_seconds() for child in started) - cpu_before
    return {"rate": steady_rate(stamps), "cpu_us": round(cpu / len(records) * 1e6, 1)}


def measure_quix(env: BenchEnv, data: Path, records: list[Record]) -> dict[str, float]:
    """Rate (events/s) and CPU (microseconds an event) of the bare Quix Streams application."""
    python = quix_python()
    label = f"{NAME}-quix-1"
    with env.broker(label) as bootstrap, children() as started:
        create_topic(bootstrap, PASSTHROUGH_TOPIC, PARTITIONS)
        produce_all(raw_producer(bootstrap), CUSTOMER_EVENTS, records)
        log = env.folder("logs") / f"{label}.log"
        app = Child(
            [f"bench-quix-{len(records)}"],
            env.process_env(bootstrap, data),
            log,
            command=(str(python), str(QUIX_APP)),
        )
        started.append(app)
        app.wait_for(lambda lines: "FIRST" in lines, 120, f"{label}: first record")
        cpu_before = app.cpu_seconds()
        stamps = read_records(
            bootstrap,
            PASSTHROUGH_TOPIC,
            len(records),
            timeout=60 + len(records) / 500,
            values=False,
        )
        cpu = app.cpu_seconds() - cpu_before
    return {"rate": steady_rate(stamps), "cpu_us": round(cpu / len(records) * 1e6, 1)}
