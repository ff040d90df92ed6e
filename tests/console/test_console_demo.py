"""`make run` as a new user meets it: `lifecycle up --demo --console` prints the console's address
and a first password once; signing in, filing an erasure for a demo customer and seeing it
completed on the Requests page works over real HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from console.helpers import csrf_of

from fixtures.broker import LIFECYCLE, REPO, WorkerProcess

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(tmp_path: Path, port: int, name: str) -> WorkerProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
    env.update(
        LIFECYCLE_DATA_DIR=str(tmp_path / "data"),
        LIFECYCLE_METRICS_PORT="0",
        LIFECYCLE_CONSOLE_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [LIFECYCLE, "up", "--demo", "--console"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(process, log)


def test_make_run_prints_the_console_and_a_first_password_and_an_erasure_completes(
    tmp_path: Path,
) -> None:
    port = free_port()
    demo = start(tmp_path, port, "first")
    try:
        demo.wait_for_log("Sign in as 'officer' with password ", timeout=120)
        found = re.search(r"Sign in as 'officer' with password (\S+)", demo.log())
        assert found is not None
        password = found.group(1)
        assert f"Console: http://127.0.0.1:{port}/" in demo.log()
        demo.wait_for_log(" allowed; ", timeout=120)  # the pipeline decides

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True) as browser:
            token = csrf_of(browser.get("/login").text)
            signed = browser.post(
                "/login", data={"name": "officer", "password": password, "csrf_token": token}
            )
            assert signed.status_code == 200 and "Customers' requests" in signed.text
            token = csrf_of(signed.text)
            filed = browser.post(
                "/requests/file",
                data={"customer_id": "C-100003", "kind": "erasure", "csrf_token": token},
            )
            request_id = str(filed.url).rsplit("/", 1)[1]
            assert request_id.startswith("REQ-")
            deadline = time.monotonic() + 60
            while True:
                page = browser.get("/requests", params={"status": "answered"}).text
                row = re.search(rf'data-request-id="{request_id}">(.*?)</tr>', page, re.S)
                if row and re.search(r"completed|nothing held", row.group(1)):
                    break
                assert time.monotonic() < deadline, "the erasure was not answered"
                time.sleep(0.5)
        demo.wait_for_log(f"erasure {request_id} ", timeout=30)  # the terminal says so too
    finally:
        assert demo.stop(signal.SIGTERM, timeout=60) == 0, demo.log()[-3000:]
    assert password not in "\n".join(
        line for line in demo.log().splitlines() if "Sign in as" not in line
    )  # shown once, never in a log line

    again = start(tmp_path, port, "second")
    try:
        again.wait_for_log(f"Console: http://127.0.0.1:{port}/ (sign in as one of its", 120)
        assert "with password" not in again.log()
    finally:
        again.stop(signal.SIGTERM, timeout=60)
