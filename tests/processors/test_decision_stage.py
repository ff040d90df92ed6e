"""The decision stage's key destruction, in process, against the embedded broker and a real
SQLite key store: what other processes hear when a shred has to be retried."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from core.settings import load_settings
from lifecycle.runtime import Runtime
from processors.decisions import DecisionStage
from processors.metrics import Metrics
from sinks.vault import Vault
from streams.app import create_app
from streams.keys import SqlKeyStore, Versions, open_keystore
from streams.outbox import Outbox
from streams.revocations import RevocationListener

REF = "ab" * 32


@dataclass
class Stage:
    stage: DecisionStage
    runtime: Runtime
    outbox: Outbox


@pytest.fixture
def stage(broker: str, tmp_path: Path) -> Iterator[Stage]:
    settings = load_settings({"KAFKA_BOOTSTRAP": broker, "LIFECYCLE_DATA_DIR": str(tmp_path)})
    runtime = Runtime(settings).open()
    app = create_app(settings, app_id=f"test-stage-{uuid.uuid4()}")
    outbox = Outbox(settings.kafka_client_config())
    yield Stage(
        DecisionStage(app, runtime, Metrics(process_collector=False), outbox), runtime, outbox
    )
    outbox.flush_now(30)


def another_process(stage: Stage) -> SqlKeyStore:
    """A key store of another process (a publisher): same database, its own cache."""
    settings = stage.runtime.settings
    return open_keystore(stage.runtime.engine, settings.master_key_file)


def test_a_shred_retried_after_the_vault_failed_still_revokes_the_keys_everywhere(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = another_process(stage)
    before = publisher.encryption_keys([(REF, "email")])[(REF, "email")]  # cached there now
    listener = RevocationListener(
        stage.runtime.settings.kafka_client_config(), stage.runtime.codec, publisher
    ).start()
    calls: list[str] = []
    release = Vault.release

    def release_failing_once(self: Vault, subject_ref: str, categories: Any = None) -> int:
        calls.append(subject_ref)
        if len(calls) == 1:  # the keys are destroyed and committed by now
            raise OperationalError("DELETE FROM held_values", {}, Exception("database is locked"))
        return release(self, subject_ref, categories)

    monkeypatch.setattr(Vault, "release", release_failing_once)
    try:
        shredded = asyncio.run(
            stage.stage.shred(REF, {"email": Versions(before.version)}, "subject_erased")
        )
        stage.outbox.flush_now(30)

        assert len(calls) == 2 and shredded == {}  # the retry found nothing left to destroy
        assert [k.shredded_at is not None for k in publisher.keys_of(REF)] == [True]
        deadline = time.monotonic() + 15
        while listener.heard == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = publisher.encryption_keys([(REF, "email")])[(REF, "email")]
        assert after.version == before.version + 1  # never encrypts under the destroyed key
    finally:
        listener.stop()
