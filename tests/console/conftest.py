"""The console under test: its application on a real broker and a real database (SQLite, and
PostgreSQL where a test asks), driven through FastAPI's TestClient; the ledger filled by the
workers' own ledger stage, run in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from console.helpers import ANALYST, AUDITOR, NOW, OFFICER, PASSWORD, sign_in
from fastapi.testclient import TestClient

from core.clock import FixedClock
from core.settings import Settings, load_settings
from lifecycle.console import create_app, load_console_settings, open_console
from lifecycle.console.web import Console
from lifecycle.runtime import Runtime
from processors.audit_stage import LedgerStage
from processors.metrics import Metrics
from sinks.ledger import SqlAuditSink, open_audit_sink


@pytest.fixture
def settings(
    tmp_path: Path, broker: str, lifecycle_env: dict[str, str], request: pytest.FixtureRequest
) -> Settings:
    env = {
        "KAFKA_BOOTSTRAP": broker,
        "LIFECYCLE_DATA_DIR": str(tmp_path / "data"),
        # the test sources' secrets, as the workers of lifecycle_env have them registered
        "LIFECYCLE_SOURCE_SECRET_FILE": lifecycle_env["LIFECYCLE_SOURCE_SECRET_FILE"],
    }
    marker = request.node.get_closest_marker("postgres")
    if marker is not None:
        env["LIFECYCLE_DB_URL"] = str(request.getfixturevalue("postgres_db_url"))
    return load_settings(env)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def console(settings: Settings, clock: FixedClock) -> Iterator[Console]:
    runtime = Runtime(settings, clock=clock)
    services = open_console(runtime, load_console_settings(settings, {}), clock)
    for name, role in ((OFFICER, "privacy_officer"), (ANALYST, "analyst"), (AUDITOR, "auditor")):
        services.users.add(name, role, PASSWORD)
    yield services
    services.close()
    runtime.engine.dispose()


@pytest.fixture
def client(console: Console) -> Iterator[TestClient]:
    with TestClient(create_app(console), base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture
def sign_in_as(client: TestClient) -> Callable[[str], str]:
    return lambda name: sign_in(client, name)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[SqlAuditSink]:
    """The ledger itself, to put decisions on directly."""
    sink = open_audit_sink(settings)
    yield sink
    sink.close()


@pytest.fixture
def ledger_stage(console: Console, settings: Settings) -> Iterator[LedgerStage]:
    """The workers' ledger stage: what is published to privacy.decisions lands on the ledger."""
    stage = LedgerStage(
        console.runtime,
        open_audit_sink(settings),
        Metrics(process_collector=False),
        group="console-test-ledger",
    )
    stage.start()
    yield stage
    stage.stop()
