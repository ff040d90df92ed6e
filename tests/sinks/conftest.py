"""Ledger fixtures: every database test runs on SQLite (a real file) and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.db import make_engine
from sinks.checkpoints import CheckpointSigner


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return str(request.getfixturevalue("postgres_db_url"))


@pytest.fixture
def another_db_url(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A second fresh, empty database of the same kind as ``db_url``."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'another.sqlite'}"
    return str(request.getfixturevalue("postgres_databases")())


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner.generate()
