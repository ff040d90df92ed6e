"""Publishing a file on several processes (``lifecycle publish FILE --jobs N``).

Each job is a process of its own (a one-process :class:`~concurrent.futures.ProcessPoolExecutor`,
started with ``spawn``: no librdkafka thread is ever forked) holding its own runtime and
:class:`~streams.publisher.Publisher`. Every job reads the whole file itself and publishes the
customers of its :class:`~streams.publisher.Share`, so each customer's events are produced by
one process, in the file's order, and no line travels between processes: a job is told only
the file's path and its share, and answers with its count and its refused lines (line number,
field, message: never a value). Their answers merge into the one report a single process
would give: every refused line, in line order, and the number published.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.logging import logging_settings
from core.settings import Settings
from streams.exceptions import PublishError
from streams.publisher import PublishReport, Share, plan_shares

if TYPE_CHECKING:
    from lifecycle.runtime import Runtime
    from streams.publisher import Publisher
    from streams.sourceauth import SourceCredentials

T = TypeVar("T")

Credentials = Callable[["Runtime"], "SourceCredentials | None"]
"""How a job finds the secrets it signs with, given its runtime: a module-level function, so
that a spawned process can be told which (see :func:`file_credentials`)."""

AUTO_JOB_BYTES = 1 << 20
"""Without ``--jobs``, a file gets one job per this many bytes (up to one per core): starting
a job takes about a second, more than one job publishes of a smaller share."""


def file_credentials(runtime: Runtime) -> SourceCredentials | None:
    """The secrets in ``LIFECYCLE_SOURCE_SECRET_FILE`` (None when it is not set)."""
    return runtime.source_credentials


def registry_credentials(runtime: Runtime) -> SourceCredentials:
    """Every registered source's current secret, read from the registry with the master key
    (``publish --sign-from-registry``)."""
    from streams.sourceauth import SourceCredentials

    registry = runtime.sources
    return SourceCredentials(registry.credential(found.name) for found in registry.sources())


GC_FIRST_THRESHOLD = 20_000
"""Container objects allocated between two collections of the youngest generation, in a
publishing process (Python's default: 700)."""


def settle_collector() -> None:
    """Tune the garbage collector of a process that is about to publish: the objects of its
    opening (modules, runtime, clients) are frozen out of every collection, and the youngest
    generation is collected after :data:`GC_FIRST_THRESHOLD` allocations. A publisher makes a
    score of small containers an event that live as long as their chunk; with the default
    threshold the collector scanned them dozens of times a chunk and, as they were promoted,
    ran full collections over every object of the process, which cost about as much CPU as
    the encoding did (profiled in the ``publish`` benchmark). The publisher makes no
    reference cycles of its own, so little waits longer for a collection."""
    gc.freeze()
    _first, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_THRESHOLD, second, third)


def auto_jobs(path: Path, cores: int | None = None) -> int:
    """The jobs a file gets when ``--jobs`` is not given: one per :data:`AUTO_JOB_BYTES`,
    at least one, at most one per core."""
    size = path.stat().st_size
    return max(1, min(cores or os.cpu_count() or 1, size // AUTO_JOB_BYTES))


@dataclass(slots=True)
class ShareOutcome:
    """What one job answers for its share: what it published and refused, the delivery
    failure that stopped it (None: every record acknowledged), and its CPU seconds."""

    report: PublishReport
    failure: str | None = None
    cpu_seconds: float = 0.0


@dataclass(slots=True)
class JobsOutcome:
    """The merged answer of every job: one report as a single process gives it, and the first
    delivery failure (None: every record of every job acknowledged)."""

    report: PublishReport = field(default_factory=PublishReport)
    failure: str | None = None
    cpu_seconds: float = 0.0


class PublishJobs:
    """``jobs`` publishing processes, each opened once (runtime, keys, producer) and reused
    for every file given to :meth:`publish_file`. Opening raises what a job's opening raised
    (a wrong master key, an unreachable key store), as a single process would."""

    def __init__(
        self, settings: Settings, jobs: int, *, credentials: Credentials = file_credentials
    ) -> None:
        if jobs < 1:
            raise ValueError("at least one job")
        context = multiprocessing.get_context("spawn")
        self.jobs = jobs
        self._pools = [ProcessPoolExecutor(1, mp_context=context) for _ in range(jobs)]
        try:
            logs = logging_settings()  # the level and format this process logs with
            opened = [pool.submit(_open, settings, credentials, logs) for pool in self._pools]
            for future in opened:
                _result(future, "while opening")
        except BaseException:
            self._shutdown()
            raise

    def publish_file(self, path: Path) -> JobsOutcome:
        """Publish every line of ``path``, each customer's in one job (the shares balanced
        over the file by a first pass here: :func:`~streams.publisher.plan_shares`); waits for
        every job and every delivery report."""
        shares: list[Share | None] = [None]
        if self.jobs > 1:
            with open(path, "rb") as lines:
                shares = list(plan_shares(lines, self.jobs))
        futures: list[Future[ShareOutcome]] = [
            pool.submit(_publish_share, str(path), share)
            for pool, share in zip(self._pools, shares, strict=True)
        ]
        outcomes = [_result(future, "while publishing its share") for future in futures]
        merged = JobsOutcome()
        for outcome in outcomes:
            merged.report.published += outcome.report.published
            merged.report.errors.extend(outcome.report.errors)
            merged.cpu_seconds += outcome.cpu_seconds
            if merged.failure is None:
                merged.failure = outcome.failure
        merged.report.errors.sort(key=lambda error: error.line)
        return merged

    def close(self) -> None:
        """Close every job's publisher (waiting for its deliveries) and end the processes."""
        try:
            for pool in self._pools:
                try:
                    pool.submit(_close).result()
                except BrokenProcessPool:
                    continue  # the job already ended (reported where it was noticed)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PublishJobs:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _result(future: Future[T], doing: str) -> T:
    """The job's answer; a job that ended abruptly (killed, out of memory) is a
    :class:`PublishError`, as an unacknowledged record is: what it acknowledged stays
    published (lines that carry their ``event_id`` can be published again safely)."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise PublishError(f"a publishing job ended abruptly {doing}: {exc}") from exc


# --------------------------------------------------------------------------- in each job

_publisher: Publisher | None = None
"""This job's publisher (a job is a process of its own)."""


def _open(settings: Settings, credentials: Credentials, log_settings: dict[str, Any]) -> None:
    global _publisher
    from core.logging import configure_logging
    from lifecycle.runtime import Runtime

    configure_logging(**log_settings)
    runtime = Runtime(settings).open()
    _publisher = runtime.publisher(
        delivery_timeout_ms=settings.publish_timeout_ms, credentials=credentials(runtime)
    )
    settle_collector()


def _publish_share(path: str, share: Share | None) -> ShareOutcome:
    publisher = _publisher
    assert publisher is not None, "the job was not opened"
    began = time.process_time()
    outcome = ShareOutcome(PublishReport())
    try:
        with open(path, "rb") as lines:
            outcome.report = publisher.publish_lines(lines, flush=False, share=share)
        publisher.flush()
    except PublishError as exc:
        outcome.failure = str(exc)
    outcome.cpu_seconds = time.process_time() - began
    return outcome


def _close() -> None:
    global _publisher
    publisher, _publisher = _publisher, None
    if publisher is not None:
        publisher.close()
