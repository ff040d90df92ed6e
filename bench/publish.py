"""publish: JSON lines to encrypted Avro records acknowledged by the broker (``lifecycle
publish``'s path: validate, fetch data keys, encrypt three fields and ``subject_id``, encode,
idempotent produce with all acks, wait for every delivery report), as ``lifecycle publish FILE
--jobs N`` runs it: one job, then two (:mod:`lifecycle.publish_jobs`, each job a process of
its own, started and warmed before the timed rounds).

Baselines, in the same run: for one job, a plain confluent-kafka producer (same
configuration) sending random bytes of the sizes just published under the same keys; for two
jobs, one job. Rounds alternate, medians count.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from bench.base import Row, Scale, Target
from bench.environment import (
    BenchEnv,
    create_topic,
    produce_all,
    raw_producer,
    read_records,
)
from bench.workload import traffic_lines
from lifecycle.publish_jobs import PublishJobs
from lifecycle.runtime import Runtime
from lifecycle.traffic import traffic_credentials
from streams.codec import Codec, make_codec
from streams.sourceauth import SourceCredentials
from streams.topics import CUSTOMER_EVENTS

NAME = "publish"
RAW_TOPIC = "bench.raw"
ROUNDS = 3


def traffic_signing(runtime: Runtime) -> SourceCredentials:
    """What each job signs with: the traffic's sources, registered when absent."""
    return traffic_credentials(runtime.sources)


def run(env: BenchEnv, scale: Scale) -> list[Row]:
    count = scale.pick(60_000, 2_000)
    warm = scale.pick(10_000, 200)
    lines = traffic_lines(warm + count, scale.pick(10_000, 300))
    folder = env.folder(NAME)
    warm_file, timed_file = folder / "warm.jsonl", folder / "timed.jsonl"
    _write(warm_file, lines[:warm])
    _write(timed_file, lines[warm:])
    with env.broker(NAME) as bootstrap:
        settings = env.settings(bootstrap, folder)
        codec = make_codec(settings.schema_registry_url)
        with (
            PublishJobs(settings, 1, credentials=traffic_signing) as one,
            PublishJobs(settings, 2, credentials=traffic_signing) as two,
        ):
            for jobs in (one, two):  # processes up, connections up, first keys created
                _publish(jobs, warm_file, warm)
            create_topic(bootstrap, RAW_TOPIC, 4)
            producer = raw_producer(bootstrap)
            singles, doubles, baselines, cpu, cpu_two = [], [], [], [], []
            raw: list[tuple[bytes, bytes, int | None]] = []
            for _ in range(ROUNDS):
                elapsed, cpu_seconds = _publish(one, timed_file, count)
                singles.append(count / elapsed)
                cpu.append(cpu_seconds / count * 1e6)
                if not raw:  # the baseline sends bytes of the sizes just published
                    shapes = _published_shapes(codec, bootstrap, warm + count)[warm:]
                    noise = os.urandom(1 << 16)
                    raw = [(key, noise[: len(value)], None) for key, value in shapes]
                    produce_all(producer, RAW_TOPIC, raw[:1000])  # connections up
                began = time.perf_counter()
                produce_all(producer, RAW_TOPIC, raw)
                baselines.append(count / (time.perf_counter() - began))
                elapsed, cpu_seconds = _publish(two, timed_file, count)
                doubles.append(count / elapsed)
                cpu_two.append(cpu_seconds / count * 1e6)
    notes = {"events": count, "rounds": ROUNDS}
    single = statistics.median(singles)
    return [
        Row(
            NAME,
            "JSON line -> encrypted Avro record acked, 1 job",
            "events/s",
            single,
            statistics.median(baselines),
            "raw confluent-kafka produce, same sizes and keys",
            Target("ratio_at_least", 0.1),
            {
                **notes,
                "cpu_us_per_event": round(statistics.median(cpu), 1),
                "mean_record_bytes": round(sum(len(v) for _, v, _ in raw) / len(raw)),
            },
        ),
        Row(
            NAME,
            "JSON line -> encrypted Avro record acked, 2 jobs (1 per core)",
            "events/s",
            statistics.median(doubles),
            single,
            "publish, 1 job",
            Target("ratio_at_least", 1.7),
            {**notes, "cpu_us_per_event": round(statistics.median(cpu_two), 1)},
        ),
    ]


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _publish(jobs: PublishJobs, path: Path, count: int) -> tuple[float, float]:
    """Seconds to publish ``path`` (every record acknowledged), and the jobs' CPU seconds."""
    began = time.perf_counter()
    outcome = jobs.publish_file(path)
    elapsed = time.perf_counter() - began
    report = outcome.report
    assert outcome.failure is None, outcome.failure
    assert report.ok and report.published == count, report.errors[:3]
    return elapsed, outcome.cpu_seconds


def _published_shapes(codec: Codec, bootstrap: str, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first ``count`` records published, in publishing order (by
    ``published_at``: the warm-up's first)."""
    records = read_records(bootstrap, CUSTOMER_EVENTS, count)
    order = {
        id(m): codec.decode("lifecycle.CustomerEvent", m.value())["published_at"] for m in records
    }
    return [(m.key(), m.value()) for m in sorted(records, key=lambda m: order[id(m)])]
