"""What the fault tests share besides fixtures: sizes, traffic with a known right answer,
publishers that feed it over time, and the settle-then-check step.

Sizes: the default keeps the whole set within a few minutes on two cores; ``LIFECYCLE_SOAK=1``
(``make soak``) runs the same tests at larger counts. Every size is printed with the result.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faults.invariants import Report, check_invariants, wait_until_settled

from lifecycle.traffic import Traffic

from fixtures.broker import LIFECYCLE, REPO, run_cli

SOAK = os.environ.get("LIFECYCLE_SOAK") == "1"
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def scaled(default: int, soak: int) -> int:
    """``default`` normally, ``soak`` under ``LIFECYCLE_SOAK=1``."""
    return soak if SOAK else default


def fault_seed() -> int:
    """The random seed of this run's fault schedule: ``LIFECYCLE_FAULT_SEED`` replays one."""
    return int(os.environ.get("LIFECYCLE_FAULT_SEED") or random.SystemRandom().randrange(1 << 30))


# --------------------------------------------------------------------------- traffic


@dataclass
class Stream:
    """Input events (the JSON-lines format), with the decision the policy gives each."""

    events: list[dict[str, Any]]
    expected: dict[str, tuple[str, str]]
    request_ids: list[str] = field(default_factory=list)

    @property
    def event_ids(self) -> list[str]:
        return [event["event_id"] for event in self.events]

    def chunks(self, count: int) -> list[bytes]:
        """The events as ``count`` JSON-lines documents of about equal size, in order."""
        size = max(1, -(-len(self.events) // count))
        return [
            "".join(json.dumps(e) + "\n" for e in self.events[i : i + size]).encode()
            for i in range(0, len(self.events), size)
        ]


def traffic_stream(
    count: int, *, subjects: int = 2_000, erasures: int = 0, seed: int = 11
) -> Stream:
    """``count`` events of realistic billing and outage traffic, plus ``erasures`` erasure
    requests of customers whose data was collected, spread through the stream.

    The expected decisions follow the policy: collections and erasures are allowed, a use is
    allowed until the customer's data is erased and denied ``subject_erased`` after it.
    """
    traffic = Traffic(subjects, seed=seed, start=START)
    rng = random.Random(seed)
    every = count // (erasures + 1) if erasures else 0
    events: list[dict[str, Any]] = []
    expected: dict[str, tuple[str, str]] = {}
    collected: list[int] = []
    erased: set[int] = set()
    request_ids: list[str] = []
    for n, event in enumerate(traffic.events(count), start=1):
        index = int(event["subject_id"][2:]) - 100_000
        if event["kind"] == "collected":
            collected.append(index)
            expected[event["event_id"]] = ("allow", "allowed")
        elif index in erased:
            expected[event["event_id"]] = ("deny", "subject_erased")
        else:
            expected[event["event_id"]] = ("allow", "allowed")
        events.append(event)
        if every and n % every == 0 and len(request_ids) < erasures and collected:
            chosen = rng.choice(collected)
            request = f"REQ-FAULT-{len(request_ids) + 1:04d}"
            erasure = traffic.erasure(chosen, request)
            events.append(erasure)
            expected[erasure["event_id"]] = ("allow", "allowed")
            request_ids.append(request)
            erased.add(chosen)
    return Stream(events, expected, request_ids)


# --------------------------------------------------------------------------- publishers


class Feeder(threading.Thread):
    """Publishes documents one after another with ``lifecycle publish``, a pause between."""

    def __init__(self, env: dict[str, str], documents: list[bytes], pause: float = 0.5) -> None:
        super().__init__(name="feeder", daemon=True)
        self.env = env
        self.documents = documents
        self.pause = pause
        self.results: list[subprocess.CompletedProcess[bytes]] = []
        self.published = threading.Event()

    def run(self) -> None:
        for document in self.documents:
            self.results.append(run_cli(self.env, "publish", "-", stdin=document, timeout=300))
            time.sleep(self.pause)
        self.published.set()

    def finish(self, timeout: float = 600.0) -> None:
        """Wait for the last document; every ``publish`` must have exited 0."""
        self.join(timeout)
        assert not self.is_alive(), f"publishing did not finish within {timeout:.0f}s"
        failed = [r for r in self.results if r.returncode != 0]
        assert not failed, f"publish failed: {failed[0].stderr.decode()[-2000:]}"
        assert len(self.results) == len(self.documents)


class StreamingPublisher:
    """One ``lifecycle publish -`` process fed through its stdin, slowly: it runs for as long as
    the writer keeps writing (so a fault can hit it mid-stream)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [LIFECYCLE, "publish", "-"],
            env=env,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def write(self, document: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(document)
        self.process.stdin.flush()

    def wait(self, timeout: float = 300.0) -> tuple[int, str]:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            code = -9
        self._log.close()
        return code, self.log_path.read_text(errors="replace")


# --------------------------------------------------------------------------- the check


def settle_and_check(
    broker: str, env: dict[str, str], what: str, timeout: float = 300.0, **expectations: Any
) -> Report:
    """Wait for the workers to commit everything, then check the invariant; prints a summary."""
    waited = wait_until_settled(broker, timeout)
    report = check_invariants(broker, env, **expectations)
    print(f"\n[{what}] settled in {waited:.1f}s; {report.summary()}")
    return report


# --------------------------------------------------------------------------- PostgreSQL


class StoppablePostgres:
    """A throw-away PostgreSQL cluster of one test's own, which the test may stop and start
    (``pg_ctl stop`` / ``pg_ctl start`` with the options it was first started with)."""

    def __init__(self) -> None:
        from fixtures.postgres import PG_SYSTEM_USER, ThrowAwayCluster, find_pg_bin

        self.cluster = ThrowAwayCluster(find_pg_bin())
        self.url = self.cluster.start()
        self._user = PG_SYSTEM_USER if os.geteuid() == 0 else None  # as the fixture runs it

    def _pg_ctl(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.cluster.bin_dir / "pg_ctl"), "-D", str(self.cluster.data), *args],
            user=self._user,
            cwd=self.cluster.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"pg_ctl {args}: {result.stdout}{result.stderr}"

    def stop(self) -> None:
        """Shut the server down now (fast: clients are disconnected, work in flight aborted)."""
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop")

    def start(self) -> None:
        opts = shlex.split((self.cluster.data / "postmaster.opts").read_text())[1:]
        if opts[:1] == ["-D"]:
            opts = opts[2:]
        self._pg_ctl("-l", str(self.cluster.log), "-o", shlex.join(opts), "-w", "-t", "60", "start")

    def close(self) -> None:
        self.cluster.stop()
