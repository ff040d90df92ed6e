"""TLS and SASL for the clients, configured only through lifecycle's environment variables.

The embedded broker (tansu 0.6.0) cannot serve TLS nor admit a SASL client (see the last tests,
which pin those limits so a tansu that lifts them is noticed). So the TLS tests put a TLS
terminator in front of a plaintext tansu that advertises the terminator's address: every
connection a client makes, bootstrap and data alike, is then TLS with a throw-away CA, server
and client certificates (mutual TLS), and a plaintext or untrusting client is turned away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from core.errors import ConfigurationError
from core.settings import load_settings
from streams.app import _faust_credentials
from streams.broker import broker_binary, free_port
from streams.security import REDACTED, faust_credentials, redacted, ssl_context

from fixtures.broker import LIFECYCLE, REPO, run_cli
from integration.test_bus import EXAMPLES

KEY_PASSWORD = "client-key-password"


# --- a throw-away PKI ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # PKCS#8, encrypted with KEY_PASSWORD


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256())


def make_pki(directory: Path, server_names: list[x509.GeneralName]) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("lifecycle test CA", ca_key, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(
        "broker", server_key, (ca, ca_key), sans=server_names, usage=x509.OID_SERVER_AUTH
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("lifecycle worker", client_key, (ca, ca_key), usage=x509.OID_CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(server.public_bytes(pem))
    pki.server_key.write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pki.client_cert.write_bytes(client.public_bytes(pem))
    pki.client_key.write_bytes(
        client_key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
        )
    )
    return pki


LOOPBACK_SANS: list[x509.GeneralName] = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
]


# --- tansu, started with the arguments a test needs -------------------------------------------


@contextlib.contextmanager
def tansu(
    log: Path, *args: str, port: int, advertised_port: int | None = None, scheme: str = "tcp"
) -> Iterator[subprocess.Popen[bytes]]:
    """tansu on 127.0.0.1:port (memory storage), advertising ``advertised_port``."""
    advertised = advertised_port or port
    command = [
        broker_binary(),
        "broker",
        "--listener-url",
        f"{scheme}://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"{scheme}://127.0.0.1:{advertised}",
        "--storage-engine",
        "memory://tansu/",
        *args,
    ]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"tansu exited with {process.returncode}: {log}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, f"tansu did not listen on {port}"
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --- a TLS terminator in front of tansu -------------------------------------------------------


class TlsTerminator:
    """Accepts TLS (mutual when a CA is given) on ``port`` and relays the plaintext to tansu."""

    def __init__(self, port: int, upstream: int, pki: Pki, *, require_client_cert: bool) -> None:
        self.port = port
        self.upstream = upstream
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        if require_client_cert:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(pki.ca)
        self.sessions = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TlsTerminator:
        self._thread.start()
        assert self._ready.wait(10), "TLS terminator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(lambda loop, context: None)  # refused handshakes
        server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self.context)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@contextlib.contextmanager
def tls_broker(
    tmp_path: Path, pki: Pki, *, require_client_cert: bool = True
) -> Iterator[TlsTerminator]:
    """Plaintext tansu on a hidden port, advertising a TLS-only address in front of it."""
    inner, outer = free_port(), free_port()
    with (
        tansu(tmp_path / "tansu.log", port=inner, advertised_port=outer),
        TlsTerminator(outer, inner, pki, require_client_cert=require_client_cert) as terminator,
    ):
        yield terminator


def tls_env(port: int, pki: Pki, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "LIFECYCLE_DATA_DIR": str(tmp_path / "data"),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CA_LOCATION": str(pki.ca),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(pki.client_cert),
        "KAFKA_SSL_KEY_LOCATION": str(pki.client_key),
        "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
        **extra,
    }


def _refused(config: dict[str, Any], timeout: float = 4.0) -> list[KafkaError]:
    """Ask for metadata with ``config``; assert it fails and return the errors reported."""
    errors: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=timeout)
    admin.poll(0.5)  # serves error_cb
    return errors


def _create_topic(config: dict[str, str]) -> str:
    topic = f"security-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(config)  # kept alive until the futures resolve
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(15)
    return topic


def _read_one(config: dict[str, str], topic: str) -> tuple[bytes | None, bytes | None]:
    consumer = Consumer({**config, "group.id": f"g-{topic}", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            return message.key(), message.value()
        raise AssertionError(f"nothing read from {topic}")
    finally:
        consumer.close()


# --- TLS: confluent-kafka clients from the environment ----------------------------------------


def test_confluent_clients_round_trip_over_mutual_tls_from_env(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", LOOPBACK_SANS)
    with tls_broker(tmp_path, pki) as terminator:
        config = load_settings(tls_env(terminator.port, pki, tmp_path)).kafka_client_config()
        assert config["security.protocol"] == "SSL"
        assert config["ssl.key.password"] == KEY_PASSWORD
        topic = _create_topic(config)
        producer = Producer(config)
        producer.produce(topic, key=b"customer-1", value=b"over tls")
        assert producer.flush(15) == 0
        assert _read_one(config, topic) == (b"customer-1", b"over tls")
        assert terminator.sessions > 0  # the only address the broker advertises is TLS


def test_plaintext_and_untrusting_clients_are_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", LOOPBACK_SANS)
    other = make_pki(tmp_path / "other", LOOPBACK_SANS)
    with tls_broker(tmp_path, pki) as terminator:
        env = tls_env(terminator.port, pki, tmp_path)
        good = load_settings(env).kafka_client_config()
        assert AdminClient(good).list_topics(timeout=10).brokers  # the broker is up
        bootstrap = {"bootstrap.servers": good["bootstrap.servers"]}
        _refused(bootstrap)  # plaintext
        without_ca = {k: v for k, v in env.items() if k != "KAFKA_SSL_CA_LOCATION"}
        wrong_ca = {**env, "KAFKA_SSL_CA_LOCATION": str(other.ca)}
        for untrusting in (without_ca, wrong_ca):  # the server's certificate is not trusted
            errors = _refused(load_settings(untrusting).kafka_client_config())
            assert any(
                e.code() == KafkaError._SSL and "certificate verify failed" in e.str()
                for e in errors
            ), errors
        no_client_cert = {
            k: v for k, v in env.items() if not k.startswith(("KAFKA_SSL_CERT", "KAFKA_SSL_KEY"))
        }
        _refused(load_settings(no_client_cert).kafka_client_config())  # mutual TLS


# --- TLS: the Faust (aiokafka) client from the same environment -------------------------------


async def _aiokafka_round_trip(bootstrap: str, auth: dict[str, Any], topic: str) -> bytes:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **auth)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"from faust", key=b"customer-2", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **auth
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
        assert record.key == b"customer-2"
        value: bytes = record.value
        return value
    finally:
        await consumer.stop()


def test_faust_credentials_connect_aiokafka_over_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", LOOPBACK_SANS)
    with tls_broker(tmp_path, pki) as terminator:
        settings = load_settings(tls_env(terminator.port, pki, tmp_path))
        config = settings.kafka_client_config()
        topic = _create_topic(config)
        credentials = _faust_credentials(settings.kafka_security)  # what create_app passes
        auth = credentials_to_aiokafka_auth(credentials)
        assert auth["security_protocol"] == "SSL"
        value = asyncio.run(_aiokafka_round_trip(config["bootstrap.servers"], auth, topic))
        assert value == b"from faust"
        assert _read_one(config, topic) == (b"customer-2", b"from faust")  # confluent agrees


async def _aiokafka_connects(bootstrap: str, auth: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **auth)
    try:
        await producer.start()
    finally:
        await producer.stop()


def test_both_clients_check_the_broker_name_unless_told_not_to(tmp_path: Path) -> None:
    """A certificate for another name: refused by default, accepted with ``...=none``."""
    pki = make_pki(tmp_path / "pki", [x509.DNSName("kafka.internal")])
    with tls_broker(tmp_path, pki) as terminator:
        env = tls_env(terminator.port, pki, tmp_path)
        bootstrap = env["KAFKA_BOOTSTRAP"]
        checked = load_settings(env)
        errors = _refused(checked.kafka_client_config())
        assert any(e.code() == KafkaError._SSL for e in errors), errors
        auth = credentials_to_aiokafka_auth(faust_credentials(checked.kafka_security))
        with pytest.raises(Exception, match="Unable to bootstrap"):
            asyncio.run(_aiokafka_connects(bootstrap, auth))
        unchecked = load_settings({**env, "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "none"})
        assert AdminClient(unchecked.kafka_client_config()).list_topics(timeout=10).brokers
        credentials = faust_credentials(unchecked.kafka_security)
        asyncio.run(_aiokafka_connects(bootstrap, credentials_to_aiokafka_auth(credentials)))


# --- SASL: the client-side mapping (tansu 0.6.0 admits no SASL client, see below) -------------


def test_sasl_ssl_env_maps_to_librdkafka_and_faust_without_leaking_secrets(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", LOOPBACK_SANS)
    env = {
        "LIFECYCLE_DATA_DIR": str(tmp_path / "data"),
        "KAFKA_BOOTSTRAP": "kafka-0:9093,kafka-1:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "lifecycle",
        "KAFKA_SASL_PASSWORD": "sasl-secret",
        "KAFKA_SSL_CA_LOCATION": str(pki.ca),
    }
    settings = load_settings(env)
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "kafka-0:9093,kafka-1:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "lifecycle",
        "sasl.password": "sasl-secret",
        "ssl.ca.location": str(pki.ca),
    }
    # streams.security's and the one create_app uses today: both must map alike
    for build in (faust_credentials, _faust_credentials):
        credentials = build(settings.kafka_security)
        auth = credentials_to_aiokafka_auth(credentials)
        assert auth["security_protocol"] == "SASL_SSL"
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == (
            "lifecycle",
            "sasl-secret",
        )
        assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
        assert "sasl-secret" not in repr(credentials)
    logged = redacted(settings.kafka_client_config())
    assert logged["sasl.password"] == REDACTED
    assert "sasl-secret" not in repr(logged)

    plain = load_settings({**env, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    auth = credentials_to_aiokafka_auth(faust_credentials(plain.kafka_security))
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["ssl_context"] is None
    assert ssl_context(plain.kafka_security) is None
    assert faust_credentials(load_settings({}).kafka_security) is None  # PLAINTEXT

    for bad in (
        {"KAFKA_SASL_MECHANISM": ""},  # librdkafka would take GSSAPI, app.py SCRAM-SHA-512
        {"KAFKA_SASL_MECHANISM": "GSSAPI"},
        {"KAFKA_SASL_USERNAME": ""},
        {"KAFKA_SECURITY_PROTOCOL": "TLS"},
        {"KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "strict"},
    ):
        with pytest.raises(ConfigurationError) as raised:
            faust_credentials(load_settings({**env, **bad}).kafka_security)
        assert "sasl-secret" not in str(raised.value)


def test_the_pipeline_runs_over_mutual_tls_and_never_logs_the_key_password(
    tmp_path: Path,
) -> None:
    """`lifecycle up`, `publish` and `audit replay` as a user runs them, configured for TLS only
    through the environment: every event is decided and audited over TLS, and the client key's
    password appears in no output."""
    pki = make_pki(tmp_path / "pki", LOOPBACK_SANS)
    outside = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "KAFKA_"))}
    with tls_broker(tmp_path, pki) as terminator:
        env = {
            **outside,
            **tls_env(terminator.port, pki, tmp_path),
            "LIFECYCLE_LOG_LEVEL": "DEBUG",
            "LIFECYCLE_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
        log_path = tmp_path / "worker.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [LIFECYCLE, "up"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            published = run_cli(env, "publish", str(EXAMPLES))
            assert published.returncode == 0, published.stderr.decode()
            events = len(EXAMPLES.read_text().splitlines())
            replayed = b""
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert worker.poll() is None, log_path.read_text(errors="replace")[-3000:]
                replay = run_cli(env, "audit", "replay", "--from-beginning")
                replayed = replay.stdout + replay.stderr
                if replay.returncode == 0 and len(replay.stdout.splitlines()) >= events:
                    break
                time.sleep(1)
            assert len(replay.stdout.splitlines()) == events, replayed.decode()[-2000:]
        finally:
            worker.terminate()
            worker.wait(30)
        assert terminator.sessions > 0
        outputs = [
            log_path.read_bytes(),
            published.stdout + published.stderr,
            replayed,
        ]
        for output in outputs:
            assert KEY_PASSWORD.encode() not in output
        assert b"batch.decided" in outputs[0]  # the worker's own log was captured


# --- the embedded broker's limits, pinned ------------------------------------------------------


def test_tansu_refuses_cert_together_with_key(tmp_path: Path) -> None:
    """tansu 0.6.0 puts --cert and --key in one clap group, which makes them exclusive."""
    pki = make_pki(tmp_path / "pki", LOOPBACK_SANS)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    result = subprocess.run(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/",
         "--cert", str(pki.server_cert), "--key", str(pki.server_key)],
        capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"the argument '--cert <CERT>' cannot be used with '--key <KEY>'" in result.stderr


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_tansu_with_cert_alone_still_speaks_plaintext(tmp_path: Path, scheme: str) -> None:
    """--cert without --key builds no TLS config, and the listener ignores the URL's scheme."""
    pki = make_pki(tmp_path / "pki", LOOPBACK_SANS)
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.server_cert.read_bytes() + pki.server_key.read_bytes())
    port = free_port()
    with tansu(tmp_path / "tansu.log", "--cert", str(combined), port=port, scheme=scheme):
        bootstrap = f"127.0.0.1:{port}"
        assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers
        env = {
            "KAFKA_BOOTSTRAP": bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CA_LOCATION": str(pki.ca),
        }
        _refused(load_settings(env).kafka_client_config())
        context = ssl.create_default_context(cafile=pki.ca)
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            raw.settimeout(3)
            # tansu reads the ClientHello as a Kafka frame header and waits for ~369 MB
            with pytest.raises((TimeoutError, ssl.SSLError, ConnectionError)):
                context.wrap_socket(raw, server_hostname="localhost")


def test_tansu_authentication_admits_no_client(tmp_path: Path) -> None:
    """--authentication requires SASL, but this build stores no SCRAM credential.

    The only storage compiled in is dynostore (memory://, s3://), whose
    upsert_user_scram_credential discards the credential and whose user_scram_credential
    always answers None; PLAIN is not compiled into its SASL library; and ``tansu user create``
    itself does not authenticate, so the broker refuses it.
    """
    port = free_port()
    with tansu(tmp_path / "tansu.log", "--authentication", port=port):
        bootstrap = f"127.0.0.1:{port}"
        created = subprocess.run(
            [broker_binary(), "user", "create", "--broker", f"tcp://{bootstrap}",
             "lifecycle", "sasl-secret"],
            capture_output=True, timeout=20, check=False,
        )  # fmt: skip
        assert created.returncode != 0
        _refused({"bootstrap.servers": bootstrap})  # no SASL at all
        env = {
            "KAFKA_BOOTSTRAP": bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "lifecycle",
            "KAFKA_SASL_PASSWORD": "sasl-secret",
        }
        errors = _refused(load_settings(env).kafka_client_config())
        assert any(
            e.code() == KafkaError._AUTHENTICATION and "unknown-user" in e.str() for e in errors
        ), errors
        plain = load_settings({**env, "KAFKA_SASL_MECHANISM": "PLAIN"})
        _refused(plain.kafka_client_config())
