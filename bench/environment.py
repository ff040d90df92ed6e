"""What the benchmarks run on: a scratch folder, a broker with the contract's topics, settings
for pipeline processes, and the few measuring tools they share (rates from broker timestamps
or from a topic's growth, CPU time and memory of a process, percentiles).

The broker is a fresh embedded tansu per benchmark unless ``KAFKA_BOOTSTRAP`` names a cluster;
then that cluster is used as it is (use a throw-away one: the pipeline's topic names are fixed
and the worker benchmarks expect them empty).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from core.settings import Settings, load_settings
from streams import clients
from streams.broker import EmbeddedBroker
from streams.offsets import read_to_ends
from streams.topic_admin import apply_topics

PARTITIONS = 4
REPO = Path(__file__).resolve().parent.parent


@dataclass
class BenchEnv:
    """A scratch folder for one ``python -m bench`` run; removed at the end."""

    root: Path
    external_bootstrap: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    """Artefacts one benchmark makes and another reuses (e.g. the ledger verify reads)."""

    @classmethod
    @contextlib.contextmanager
    def create(cls) -> Iterator[BenchEnv]:
        root = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
        try:
            yield cls(root, os.environ.get("KAFKA_BOOTSTRAP") or None)
        finally:
            if os.environ.get("BENCH_KEEP"):  # keep logs and databases for a look
                print(f"[bench] kept {root}", file=sys.stderr)
            else:
                shutil.rmtree(root, ignore_errors=True)

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def broker(self, name: str) -> Iterator[str]:
        """Bootstrap address of a broker holding the contract's topics (fresh when embedded)."""
        if self.external_bootstrap:
            apply_topics({"bootstrap.servers": self.external_bootstrap}, PARTITIONS)
            yield self.external_bootstrap
            return
        with EmbeddedBroker(log_file=self.folder("logs") / f"broker-{name}.log") as embedded:
            apply_topics({"bootstrap.servers": embedded.bootstrap}, PARTITIONS)
            yield embedded.bootstrap

    def settings(self, bootstrap: str, data_dir: Path) -> Settings:
        return load_settings(self.process_env(bootstrap, data_dir))

    def process_env(self, bootstrap: str, data_dir: Path) -> dict[str, str]:
        """Environment of a pipeline process on ``bootstrap`` with its data under ``data_dir``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
        env.update(
            KAFKA_BOOTSTRAP=bootstrap,
            LIFECYCLE_DATA_DIR=str(data_dir),
            LIFECYCLE_LOG_LEVEL="INFO",
            LIFECYCLE_METRICS_PORT="0",
            LIFECYCLE_PARTITIONS=str(PARTITIONS),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(REPO),
        )
        return env


# --------------------------------------------------------------------------- processes


class Child:
    """A benchmark helper process (``python -m bench.roles ...``) whose stdout lines are
    collected; ``wait_for`` waits for a line that satisfies a test."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        log_path: Path,
        *,
        command: Sequence[str] | None = None,
    ) -> None:
        """``command``: what runs ``args`` (default: ``python -m bench.roles``)."""
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*(command or (sys.executable, "-m", "bench.roles")), *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, test: Callable[[list[str]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not test(self.lines):
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(
                        f"{what}: helper exited ({self.process.returncode}); "
                        f"see {self.log_path}:\n{self.tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{what}: not within {timeout:.0f}s; see {self.log_path}")
                self._changed.wait(min(left, 0.5))

    def tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def rss_mb(self) -> float:
        return process_rss_mb(self.process.pid)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)
        self._log.close()


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """A list to start helpers into; every one is stopped when the block ends."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            child.stop()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def process_rss_mb(pid: int | str = "self", *, peak: bool = False) -> float:
    """Resident memory (or its peak, VmHWM) of a process in MiB (Linux /proc)."""
    wanted = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(wanted):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {wanted} for process {pid}")


# --------------------------------------------------------------------------- the bus


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(name, num_partitions=partitions)])[name]
    try:
        future.result(30)
    except Exception as exc:
        error = exc.args[0] if exc.args else None
        if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise


def raw_producer(bootstrap: str) -> Producer:
    """A plain confluent-kafka producer, configured like the publisher's (idempotent, all
    acks, murmur2 keys, 5 ms linger): the bus's own cost, for baselines."""
    return clients.producer({"bootstrap.servers": bootstrap})


def produce_all(
    producer: Producer, topic: str, records: Sequence[tuple[bytes, bytes, int | None]]
) -> None:
    """Produce (key, value, partition) records and wait for every acknowledgement."""
    failed: list[str] = []

    def delivered(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            failed.append(error.str())

    for key, value, partition in records:
        chosen = -1 if partition is None else partition  # -1: the partitioner chooses
        while True:
            try:
                producer.produce(topic, value, key, chosen, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"{topic}: records not acknowledged within 120s")
    if failed:
        raise RuntimeError(f"{topic}: {len(failed)} records refused: {failed[0]}")


def read_records(
    bootstrap: str,
    topic: str,
    count: int | None = None,
    *,
    timeout: float = 60.0,
    idle: float = 2.0,
    values: bool = True,
) -> list[Any]:
    """Records of ``topic`` from the beginning: the first ``count``, or (without ``count``)
    all until none arrives for ``idle`` seconds. Timestamps only unless ``values``.

    Counted, not read against the high watermark: tansu 0.6 reports the watermark of a topic
    written in multi-record batches below its true end.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-reader",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while count is None or len(out) < count:
            batch = consumer.consume(10_000, 0.5)
            now = time.monotonic()
            if batch:
                last = now
            elif count is None and now - last > idle:
                break
            if now > deadline:
                raise RuntimeError(f"{topic}: {len(out)} of {count} records within {timeout:.0f}s")
            for message in batch:
                if message.error() is not None:
                    raise RuntimeError(f"reading {topic}: {message.error()}")
                out.append(message if values else message.timestamp()[1])
        return out
    finally:
        consumer.close()


def records_written(bootstrap: str, *topics: str, timeout: float = 15.0) -> dict[str, int]:
    """Records written so far to each of ``topics``: the sum of its partitions' end offsets as
    a fetch sees them (``streams.offsets``; tansu's ListOffsets answer falls short by up to a
    batch). Two readings some time apart give a topic's write rate while it is still being
    written, where :func:`read_records` would never see it go idle."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-ends-{uuid.uuid4()}",  # never joined: partitions are assigned
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        listed = consumer.list_topics(timeout=10).topics
        wanted = [(topic, p) for topic in topics for p in sorted(listed[topic].partitions)]
        ends = read_to_ends(consumer, wanted, timeout)
        return {topic: sum(ends[(topic, p)] for p in listed[topic].partitions) for topic in topics}
    finally:
        consumer.close()


def steady_rate(timestamps_ms: Sequence[int], low: float = 0.1, high: float = 0.9) -> float:
    """Records a second between the ``low`` and ``high`` quantiles of the records' broker
    timestamps: the steady rate, without start-up and the last partial batch."""
    ordered = sorted(timestamps_ms)
    if len(ordered) < 2:
        raise ValueError("need at least two records for a rate")
    first, last = int(len(ordered) * low), max(int(len(ordered) * high) - 1, 1)
    span_ms = ordered[last] - ordered[first]
    return (last - first) / max(span_ms / 1000, 1e-3)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]
