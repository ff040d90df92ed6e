"""Fixtures of the fault-injection tests (helpers are in ``faults.harness``).

These tests always start their own embedded broker (even when ``LIFECYCLE_TEST_BOOTSTRAP``
names a cluster): they freeze its process, and they account for every record of every topic,
which a shared cluster would mix with other tests' records.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faults.harness import StoppablePostgres

from streams.broker import EmbeddedBroker
from streams.topic_admin import apply_topics

# --------------------------------------------------------------------------- the broker


@pytest.fixture
def embedded_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A tansu process of this test's own, with the contract's topics (4 partitions)."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as embedded:
        apply_topics({"bootstrap.servers": embedded.bootstrap}, 4)
        yield embedded


@pytest.fixture
def broker(embedded_broker: EmbeddedBroker) -> str:
    """Overrides the shared fixture: fault tests need their own broker process."""
    return embedded_broker.bootstrap


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def stoppable_postgres() -> Iterator[StoppablePostgres]:
    """A PostgreSQL cluster of this test's own, which it may stop and start."""
    server = StoppablePostgres()
    try:
        yield server
    finally:
        server.close()
