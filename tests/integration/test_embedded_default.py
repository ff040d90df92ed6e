"""`lifecycle up --demo` on the embedded default: no KAFKA_BOOTSTRAP, its own tansu broker, and
a summary for a person instead of every log line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from fixtures.broker import LIFECYCLE, REPO, WorkerProcess, run_cli


def children_of(pid: int) -> dict[int, str]:
    """pid -> executable of every live child process of ``pid``."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = exe
    return found


def demo_and_examples_are_authenticated(
    env: dict[str, str], bootstrap: str, worker: WorkerProcess
) -> None:
    """The demo registered its sources and signs as them (its stray erasure from billing is
    refused ``source_not_authorized``); an operator publishes the examples signed from the
    registry the demo filled."""
    worker.wait_for_log("source_not_authorized 1", timeout=120)  # round 7 of the demo
    examples = REPO / "examples" / "events.jsonl"
    published = run_cli(
        {**env, "KAFKA_BOOTSTRAP": bootstrap}, "publish", "--sign-from-registry", str(examples)
    )
    assert published.returncode == 0, published.stderr.decode()
    deadline = time.monotonic() + 60
    while True:
        exported = run_cli(env, "audit", "export", "--format", "jsonl")
        records = [json.loads(line) for line in exported.stdout.decode().splitlines()]
        by_event = {r["event_id"]: r for r in records}
        if "ex-0008" in by_event or time.monotonic() > deadline:
            break
        time.sleep(1)
    reasons = {r["reason_code"] for r in records}
    assert "allowed" in reasons and "source_unauthenticated" not in reasons
    assert by_event["ex-0001"]["decision"] == "allow"
    assert by_event["ex-0007"]["decision"] == "allow"  # crm's erasure: registered for it


def test_up_demo_runs_its_own_broker_decides_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
    env.update(
        LIFECYCLE_DATA_DIR=str(tmp_path / "data"),
        LIFECYCLE_METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [LIFECYCLE, "up", "--demo"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    worker = WorkerProcess(process, log_path)
    try:
        # the demo's summary for a person: decisions by reason, each erasure and its time
        worker.wait_for_log(" allowed; ", timeout=120)
        worker.wait_for_log("erasure DEMO-REQ-5 ", timeout=60)
        brokers = {pid: exe for pid, exe in children_of(process.pid).items() if "tansu" in exe}
        assert len(brokers) == 1, f"expected one tansu child, found {children_of(process.pid)}"
        (broker_pid,) = brokers
        announced = re.search(
            r"the bus: (\S+) \(in another shell: export KAFKA_BOOTSTRAP=", worker.log()
        )
        assert announced is not None, worker.log()[-2000:]
        host, port = announced.group(1).rsplit(":", 1)
        assert host == "127.0.0.1"
        assert (tmp_path / "data" / "broker.log").exists()
        demo_and_examples_are_authenticated(env, announced.group(1), worker)
    finally:
        code = worker.stop(signal.SIGTERM, timeout=60)

    lines = worker.log().splitlines()
    summary = [
        line for line in lines if re.match(r"^\d\d:\d\d:\d\d  last \d+ s: \d+ decisions: ", line)
    ]
    assert summary, worker.log()[-3000:]
    confirmed = [line for line in lines if " erasure DEMO-REQ-" in line]
    assert re.search(
        r"erasure DEMO-REQ-5 (completed|nothing held) in \d+\.\d\d s: erased ", confirmed[0]
    )
    chatter = [
        line
        for line in lines
        if line.startswith("{") and json.loads(line).get("level") in ("debug", "info")
    ]
    assert chatter == [], chatter[:5]  # libraries and our own log lines: WARNING and above only

    assert code == 0, worker.log()[-3000:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{broker_pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{broker_pid}").exists(), "the tansu broker outlived lifecycle up"
    with socket.socket() as sock:
        assert sock.connect_ex((host, int(port))) != 0, "the broker port still answers"
