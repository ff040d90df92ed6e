"""The console's part of the plaintext scan: run it on a pipeline's stores, use every page and
download as an analyst and as a privacy officer, and keep what came back, apart from what a
privacy officer explicitly asked to see (a reveal, a report with values)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fixtures.broker import LIFECYCLE, REPO, run_cli

PASSWORD = "a long enough passphrase"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_REF = re.compile(r'name="subject_ref" value="([0-9a-f]{64})"')


@dataclass
class ConsoleOutputs:
    shown: dict[str, bytes] = field(default_factory=dict)
    """Every page and download no one asked values for: must hold no personal data."""
    asked: dict[str, bytes] = field(default_factory=dict)
    """What a privacy officer asked for (a reveal, the report with values)."""
    commands: list[bytes] = field(default_factory=list)
    log: bytes = b""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _csrf(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


def _client(url: str, name: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=url, follow_redirects=True, timeout=60)
    token = _csrf(client.get("/login").text)
    page = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
    assert page.status_code == 200 and name in page.text, page.text[:500]
    return client, _csrf(page.text)


def exercise_console(
    env: dict[str, str], tmp: Path, *, live: str, erased: str, to_erase: str
) -> ConsoleOutputs:
    """Run ``lifecycle console`` beside the pipeline of ``env`` and use it: ``live`` is a
    customer whose data is held, ``erased`` one already erased, ``to_erase`` one an officer
    erases from the console."""
    out = ConsoleOutputs()
    for name, role in (("olga", "privacy_officer"), ("andy", "analyst")):
        added = run_cli(env, "console", "user", "add", name, "--role", role,
                        stdin=PASSWORD.encode())  # fmt: skip
        assert added.returncode == 0, added.stderr.decode()
        out.commands.append(added.stdout + added.stderr)
    port = _free_port()
    log_path = tmp / "console.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [LIFECYCLE, "console", "--port", str(port)],
            env={**env, "PYTHONUNBUFFERED": "1"},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the console did not start"
                time.sleep(0.3)
        _as_analyst(url, out, live, erased)
        _as_officer(url, out, live, to_erase)
    finally:
        process.terminate()
        process.wait(30)
        out.log = log_path.read_bytes()
    return out


def _as_analyst(url: str, out: ConsoleOutputs, live: str, erased: str) -> None:
    client, token = _client(url, "andy")
    try:
        for path in (
            "/requests", "/requests.csv", "/violations", "/deadletters", "/audit",
            "/audit/records", "/audit/export?format=jsonl", "/audit/export?format=csv",
        ):  # fmt: skip
            answer = client.get(path)
            assert answer.status_code == 200, path
            out.shown[f"analyst GET {path}"] = answer.content
        for customer in (live, erased):
            page = client.post("/customer", data={"customer_id": customer, "csrf_token": token})
            out.shown[f"analyst customer page {customer}"] = page.content
            ref = _REF.search(page.text)
            assert ref is not None
            for form in ("html", "json"):
                download = client.post(
                    "/customer/report",
                    data={"subject_ref": ref.group(1), "format": form, "csrf_token": token},
                )
                out.shown[f"analyst report {form} {customer}"] = download.content
            forged = client.post(
                "/customer/reveal", data={"subject_ref": ref.group(1), "csrf_token": token}
            )
            assert forged.status_code == 403
            out.shown[f"analyst forged reveal {customer}"] = forged.content
        out.shown["analyst requests after"] = client.get("/requests").content
    finally:
        client.close()


def _as_officer(url: str, out: ConsoleOutputs, live: str, to_erase: str) -> None:
    client, token = _client(url, "olga")
    try:
        page = client.post("/customer", data={"customer_id": live, "csrf_token": token})
        out.shown["officer customer page"] = page.content
        ref = _REF.search(page.text)
        assert ref is not None
        plain = client.post(
            "/customer/report", data={"subject_ref": ref.group(1), "format": "json",
                                      "csrf_token": token},
        )  # fmt: skip
        out.shown["officer report without values"] = plain.content
        erasure = client.post(
            "/requests/file", data={"customer_id": to_erase, "kind": "erasure", "csrf_token": token}
        )
        out.shown["officer filed erasure"] = erasure.content
        request_id = str(erasure.url).rsplit("/", 1)[1]
        confirmation = client.get(f"/requests/{request_id}/confirmation")
        out.shown["officer erasure confirmation"] = confirmation.content
        access = client.post(
            "/requests/file", data={"customer_id": live, "kind": "access", "csrf_token": token}
        )
        out.shown["officer filed access request"] = access.content
        access_id = str(access.url).rsplit("/", 1)[1]
        out.shown["officer requests csv"] = client.get("/requests.csv").content
        # asked for: values
        revealed = client.post(
            "/customer/reveal", data={"subject_ref": ref.group(1), "csrf_token": token}
        )
        out.asked["officer reveal"] = revealed.content
        with_values = client.post(
            "/customer/report", data={"subject_ref": ref.group(1), "format": "html",
                                      "values": "yes", "csrf_token": token},
        )  # fmt: skip
        out.asked["officer report with values"] = with_values.content
        answered = client.post(
            f"/requests/{access_id}/report", data={"format": "json", "csrf_token": token}
        )
        out.asked["officer answer to the access request"] = answered.content
        out.shown["officer audit records after"] = client.get(
            "/audit/records?kind=values_revealed,request_filed,request_closed"
        ).content
    finally:
        client.close()


__all__ = ["ConsoleOutputs", "exercise_console"]
