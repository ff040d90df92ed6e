"""Every line a worker writes is JSON, librdkafka's own messages included."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.topic_admin import apply_topics

from fixtures.broker import REPO, Workers, run_cli

EXAMPLES = REPO / "examples" / "events.jsonl"


@pytest.fixture
def stoppable_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, which the test stops while the worker runs."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as embedded:
        apply_topics({"bootstrap.servers": embedded.bootstrap}, 4)
        yield embedded


def test_every_worker_line_is_json_even_when_librdkafka_complains(
    tmp_path: Path, lifecycle_env: dict[str, str], stoppable_broker: EmbeddedBroker
) -> None:
    env = {**lifecycle_env, "KAFKA_BOOTSTRAP": stoppable_broker.bootstrap}
    pool = Workers(env, tmp_path)
    worker = pool.start()
    try:
        assert run_cli(env, "publish", str(EXAMPLES)).returncode == 0
        worker.wait_for_log('"batch.decided"', timeout=90)
        stoppable_broker.stop()  # librdkafka now logs failed connections
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and '"logger": "librdkafka"' not in worker.log():
            time.sleep(0.5)
    finally:
        worker.stop()

    lines = [line for line in worker.log().splitlines() if line.strip()]
    not_json = []
    for line in lines:
        try:
            assert isinstance(json.loads(line), dict)
        except (ValueError, AssertionError):
            not_json.append(line)
    assert not not_json, "lines that are not JSON objects:\n" + "\n".join(not_json[:20])
    records = [json.loads(line) for line in lines]
    from_librdkafka = [r for r in records if r.get("logger") == "librdkafka"]
    assert from_librdkafka, "librdkafka logged nothing after its broker went away"
    assert all("event" in r and "level" in r for r in from_librdkafka)
    assert not any(line.startswith("%") for line in lines)
