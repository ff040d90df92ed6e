"""Fault 6: no plaintext anywhere, after a full run with erasures.

Realistic traffic for hundreds of customers, erasure requests among it (and one filed with
``lifecycle erase --wait``), card data offered through online tendering (which must never be
written), and corrupt copies of real records (dead letters). Then every place the pipeline
writes is scanned for every personal value and subject id that was published:

* every record of every topic (values, keys, headers), Faust's changelog and internal topics
  and the dead letters included;
* every line the workers and the command line printed;
* the console's log, and every page and download of the console (an analyst's and a privacy
  officer's, the requests' CSV and the audit exports included) but what a privacy officer
  explicitly asked to see (a reveal, a report with values), which must show the values;
* every file under the data dir (the SQLite database, its WAL and shared memory), or, on
  PostgreSQL, a ``pg_dump`` of the database (text, with bytea as hex, so values are also
  looked for hex-encoded).

Key material never appears in the logs: the master key file's content (base64 and raw) and
the ledger signing key. Source secrets (the tests' sources, a source registered and rotated
during the run, the command line's built-in source) appear nowhere but in the token file they
were handed over in and the one line ``sources add`` / ``rotate`` printed: not on any topic,
in any log or other command output, nor unwrapped in the database files or dump (raw, hex,
base64 or as a token). A master key file that others may read is refused.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from faults.console_scan import exercise_console
from faults.harness import fault_seed, scaled, settle_and_check, traffic_stream
from faults.invariants import read_all

from core.settings import load_settings
from lifecycle.runtime import Runtime
from streams.sourceauth import SourceCredential, SourceCredentials
from streams.topics import CUSTOMER_EVENTS

from fixtures.broker import Workers, run_cli

EVENTS = scaled(1_500, 30_000)
CARD = "4000 0000 0000 0002"
ERASED_BY_CLI = "C-990001"
PERSONAL = {
    "name": "Odette Example-Persad",
    "email": "odette.example@example.org",
    "address": "12 Sample Street, Arima",
    "banking": "ACCT-5550-1234-EXAMPLE",
    "date_of_birth": "1984-02-29",
    "telephone": "+1 868 555 0100",
}


def extra_events() -> list[dict[str, Any]]:
    """A customer with every category, card data via online tendering, and a use."""
    common = {"source": "web", "subject_id": ERASED_BY_CLI}
    return [
        {
            **common,
            "kind": "collected",
            "event_id": "plain-1",
            "actor": {"id": "web-portal", "role": "system"},
            "channel": "web_form",
            "purposes": ["billing", "account_notices", "service_provision"],
            "data": PERSONAL,
        },
        {
            **common,
            "kind": "collected",
            "event_id": "plain-2",
            "actor": {"id": "web-portal", "role": "system"},
            "channel": "online_tendering",
            "purposes": ["transaction_processing"],
            "data": {"credit_card": CARD},
        },
        {
            **common,
            "kind": "used",
            "event_id": "plain-3",
            "actor": {"id": "clerk-7", "role": "billing_clerk"},
            "categories": ["banking"],
            "purpose": "billing",
        },
    ]


def secrets_of(events: list[dict[str, Any]]) -> set[str]:
    found = set()
    for event in events:
        found.add(event["subject_id"])
        found.update(event.get("data", {}).values())
    return found


def collected_values(events: list[dict[str, Any]], subject: str) -> list[str]:
    return [
        value
        for event in events
        if event["kind"] == "collected" and event["subject_id"] == subject
        for value in event["data"].values()
    ]


def live_customers(events: list[dict[str, Any]], stream: list[dict[str, Any]]) -> tuple[str, str]:
    """Two customers whose data is held (collected, never erased), for the console to use."""
    erased = {e["subject_id"] for e in events if e["kind"] == "deletion_requested"}
    erased.add(ERASED_BY_CLI)
    held = [
        e["subject_id"]
        for e in stream
        if e["kind"] == "collected" and e["subject_id"] not in erased
    ]
    return held[0], held[-1]


def hits(blob: bytes, secrets: set[str], *, hex_too: bool = False) -> set[str]:
    found = {s for s in secrets if s.encode() in blob}
    if hex_too:
        lowered = blob.lower()
        found |= {s for s in secrets if s.encode().hex().encode() in lowered}
    return found


def everything_on_the_bus(bootstrap: str) -> dict[str, bytes]:
    """topic -> every key, value and header of every record, concatenated."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    found = {}
    for topic in sorted(topics):
        parts = []
        for message in read_all(bootstrap, topic).messages:
            parts += [message.key() or b"", message.value() or b""]
            parts += [
                name.encode() + b"=" + (value or b"") for name, value in message.headers() or []
            ]
        found[topic] = b"\x00".join(parts)
    return found


def pg_dump(url: str) -> bytes:
    from fixtures.postgres import find_pg_bin

    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    dumped = subprocess.run(
        [str(find_pg_bin() / "pg_dump"), "--data-only", "--no-owner", libpq],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert dumped.returncode == 0, dumped.stderr.decode()
    return dumped.stdout


def run_as_a_new_source(env: dict[str, str], tmp: Path, outputs: list[bytes]) -> list[str]:
    """Register a source, publish as it, rotate its secret, publish again; the tokens printed
    (their stdout is the one place they may be, so only stderr joins ``outputs``)."""
    tokens = []
    for command in (
        ["sources", "add", "meter", "--roles", "system"],
        ["sources", "rotate", "meter"],
    ):
        result = run_cli(env, *command)
        assert result.returncode == 0, result.stderr.decode()
        tokens.append(result.stdout.decode().strip())
        outputs.append(result.stderr)
        secret_file = tmp / f"meter-{len(tokens)}"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(tokens[-1] + "\n")
        event = {**extra_events()[2], "event_id": f"meter-{len(tokens)}", "source": "meter"}
        event["actor"] = {"id": "meter-1", "role": "system"}
        published = run_cli(
            {**env, "LIFECYCLE_SOURCE_SECRET_FILE": str(secret_file)},
            "publish",
            "-",
            stdin=(json.dumps(event) + "\n").encode(),
        )
        outputs.append(published.stdout + published.stderr)
        assert published.returncode == 0, published.stderr.decode()
    listed = run_cli(env, "sources", "list", "--json")
    outputs.append(listed.stdout + listed.stderr)
    return tokens


def source_secret_forms(env: dict[str, str], tokens: list[str]) -> dict[str, bytes]:
    """name -> bytes that would expose a source secret: raw, hex, base64 and the token."""
    credentials = SourceCredentials.from_file(Path(env["LIFECYCLE_SOURCE_SECRET_FILE"]))
    every = [credentials.get(name) for name in credentials.names]
    every += [SourceCredential.parse(token) for token in tokens]
    every.append(Runtime(load_settings(env)).sources.credential("cli"))
    forms = {}
    for credential in every:
        assert credential is not None
        label = f"{credential.name} v{credential.version}"
        token = credential.token()
        forms[f"{label} raw"] = credential.secret
        forms[f"{label} hex"] = credential.secret.hex().encode()
        forms[f"{label} base64url"] = token.rsplit(":", 1)[1].encode()
        forms[f"{label} base64"] = base64.b64encode(credential.secret).rstrip(b"=")
        forms[f"{label} token"] = token.encode()
    return forms


def corrupt_copies(bootstrap: str, rng: random.Random, count: int) -> int:
    """Dead letters: corrupt copies of real records (their ciphertext included)."""
    genuine = read_all(bootstrap, CUSTOMER_EVENTS).messages
    producer = Producer({"bootstrap.servers": bootstrap})
    for message in rng.sample(genuine, min(count, len(genuine))):
        value = message.value()
        producer.produce(CUSTOMER_EVENTS, value[: rng.randrange(11, len(value))], message.key())
    assert producer.flush(30) == 0
    return min(count, len(genuine))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_no_plaintext_value_or_subject_id_anywhere_after_a_run_with_erasures(
    database: str,
    workers: Workers,
    lifecycle_env: dict[str, str],
    broker: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    env = dict(lifecycle_env)
    if database == "postgresql":
        env["LIFECYCLE_DB_URL"] = request.getfixturevalue("postgres_db_url")
    workers.env = env
    seed = fault_seed()
    rng = random.Random(seed)
    stream = traffic_stream(EVENTS, subjects=400, erasures=scaled(10, 50), seed=seed)
    events = stream.events + extra_events()
    secrets = secrets_of(events)
    print(f"\n[plaintext {database}] seed {seed}: {len(events)} events, {len(secrets)} secrets")

    worker = workers.start()
    worker.wait_for_log("Worker ready", 60)
    outputs = []
    document = "".join(json.dumps(e) + "\n" for e in events).encode()
    published = run_cli(env, "publish", "-", stdin=document)
    outputs.append(published.stdout + published.stderr)
    assert published.returncode == 0, published.stderr.decode()[-2000:]
    letters = corrupt_copies(broker, rng, scaled(20, 100))
    erased = run_cli(env, "erase", ERASED_BY_CLI, "--wait", "--timeout", "120")
    outputs.append(erased.stdout + erased.stderr)
    assert erased.returncode == 0, erased.stderr.decode()
    tokens = run_as_a_new_source(env, tmp_path, outputs)
    report = settle_and_check(broker, env, f"plaintext {database}")
    live, to_erase = live_customers(events, stream.events)
    console = exercise_console(
        env, request.getfixturevalue("tmp_path"), live=live, erased=ERASED_BY_CLI,
        to_erase=to_erase,
    )  # fmt: skip
    outputs += console.commands
    asked = b"".join(console.asked.values())
    assert hits(asked, {collected_values(events, live)[0]}), "the scan sees revealed values"

    leaks: dict[str, set[str]] = {}
    for name, body in console.shown.items():
        if found := hits(body, secrets):
            leaks[f"console {name}"] = found
    if found := hits(console.log, secrets):
        leaks["console log"] = found
    for topic, blob in everything_on_the_bus(broker).items():
        if found := hits(blob, secrets):
            leaks[f"topic {topic}"] = found
    for started in workers.started:
        if found := hits(started.log().encode(), secrets):
            leaks[f"log {started.log_path.name}"] = found
    for n, output in enumerate(outputs):
        if found := hits(output, secrets):
            leaks[f"command output {n}"] = found
    data_dir = Path(env["LIFECYCLE_DATA_DIR"])
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        if found := hits(path.read_bytes(), secrets):
            leaks[f"file {path.relative_to(data_dir)}"] = found
    dump = pg_dump(env["LIFECYCLE_DB_URL"]) if database == "postgresql" else b""
    if found := hits(dump, secrets, hex_too=True):
        leaks["pg_dump"] = found
    scanned = len(list(data_dir.rglob("*")))
    print(f"[plaintext {database}] scanned every topic, {len(workers.started)} worker logs, "
          f"{len(outputs)} command outputs, {scanned} files; hits: {leaks}")  # fmt: skip
    assert leaks == {}

    master = (data_dir / "master.key").read_bytes()
    signing = (data_dir / "ledger-signing.key").read_bytes()
    material = {
        "master key file": master.strip(),
        "master key raw": base64.b64decode(master.strip()),
        "master key hex": base64.b64decode(master.strip()).hex().encode(),
        "signing key file": signing.strip(),
        **{f"signing key line {i}": line for i, line in enumerate(signing.splitlines())
           if len(line) > 20 and b"-----" not in line},
    }  # fmt: skip
    logs = b"".join([w.log().encode() for w in workers.started] + outputs)
    assert [name for name, value in material.items() if value in logs] == []

    forms = source_secret_forms(env, tokens)
    places = {f"topic {t}": blob for t, blob in everything_on_the_bus(broker).items()}
    places |= {f"log {w.log_path.name}": w.log().encode() for w in workers.started}
    places |= {f"command output {n}": output for n, output in enumerate(outputs)}
    places |= {
        f"file {p.relative_to(data_dir)}": p.read_bytes()
        for p in data_dir.rglob("*")
        if p.is_file()
    }
    places["pg_dump"] = dump
    exposed = {
        place: sorted(name for name, value in forms.items() if value in blob)
        for place, blob in places.items()
    }
    assert {place: names for place, names in exposed.items() if names} == {}
    report.assert_holds()
    assert report.dead_lettered == letters


@pytest.mark.slow
@pytest.mark.parametrize("mode", [0o644, 0o640], ids=["0644", "0640"])
def test_a_master_key_file_others_may_read_is_refused(
    lifecycle_env: dict[str, str], broker: str, tmp_path: Path, mode: int
) -> None:
    event = extra_events()[:1]
    document = "".join(json.dumps(e) + "\n" for e in event).encode()
    assert run_cli(lifecycle_env, "publish", "-", stdin=document).returncode == 0
    key_file = Path(lifecycle_env["LIFECYCLE_DATA_DIR"]) / "master.key"
    content = key_file.read_bytes().strip()
    os.chmod(key_file, mode)
    for command in (["publish", "-"], ["up"]):
        refused = run_cli(lifecycle_env, *command, stdin=document, timeout=60)
        message = refused.stderr.decode()
        assert refused.returncode != 0, f"{command[0]} accepted a {mode:o} master key file"
        assert "readable by others" in message and f"chmod 600 {key_file}" in message, message
        assert content.decode() not in message + refused.stdout.decode()
