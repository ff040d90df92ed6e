"""The source registry on SQLite and PostgreSQL: registration, rotation with a grace period,
removal, secrets wrapped under the master key (and re-wrapped with it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from core.clock import FixedClock
from core.db import make_engine
from streams.exceptions import SourceError, WrongMasterKeyError
from streams.keys import SqlKeyStore, load_master_key, open_keystore
from streams.keys.tables import keystore_meta
from streams.sources import (
    BUILTIN_SOURCES,
    DESTRUCTIVE_KINDS,
    ERASURE,
    SourceRegistry,
    parse_destructive,
)

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "postgresql":
        return make_engine(request.getfixturevalue("postgres_db_url"))
    return make_engine(f"sqlite:///{tmp_path / 'registry.sqlite'}")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def registry(engine: Engine, tmp_path: Path, clock: FixedClock) -> SourceRegistry:
    return SourceRegistry(engine, open_keystore(engine, tmp_path / "master.key"), clock=clock)


def stored_values(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return list(conn.execute(select(keystore_meta.c.value)).scalars())


def test_a_registered_source_has_its_roles_kinds_and_a_secret_stored_only_wrapped(
    registry: SourceRegistry, engine: Engine
) -> None:
    credential = registry.add("crm", ["customer_service", "privacy_officer"], [ERASURE])
    (crm,) = registry.sources()
    assert (crm.name, crm.current_version) == ("crm", 1)
    assert crm.may_assert("privacy_officer") and not crm.may_assert("billing_clerk")
    assert crm.may_file(ERASURE) and not crm.may_file("consent_withdrawal")
    assert all(version.secret is None for version in crm.versions)  # listing: no secrets
    assert registry.credential("crm") == credential
    assert not any(credential.secret in value for value in stored_values(engine))


def test_a_name_is_registered_once_and_must_be_a_plain_name(registry: SourceRegistry) -> None:
    registry.add("web", None)
    with pytest.raises(SourceError, match="registered already"):
        registry.add("web", None)
    for bad in ("Web", "1web", "web site", "w" * 41, ""):
        with pytest.raises(SourceError, match="source name"):
            registry.add(bad, None)
    with pytest.raises(SourceError, match="unknown destructive kind 'erase'"):
        parse_destructive("erase")
    assert parse_destructive("all") == DESTRUCTIVE_KINDS and parse_destructive("none") == ()


def test_a_rotated_secret_is_current_and_the_old_one_is_accepted_until_its_grace_ends(
    registry: SourceRegistry, engine: Engine, clock: FixedClock
) -> None:
    first = registry.add("billing", ["billing_clerk"])
    second = registry.rotate("billing", timedelta(hours=1))
    assert (first.version, second.version) == (1, 2) and first.secret != second.secret
    assert registry.credential("billing") == second
    billing = registry.snapshot()["billing"]
    old = billing.version(1)
    assert old is not None and old.secret == first.secret
    assert old.expires_at == T0 + timedelta(hours=1)
    assert old.accepted_at(T0 + timedelta(minutes=59)) and not old.accepted_at(old.expires_at)
    clock.advance(timedelta(hours=2))
    registry.rotate("billing", timedelta(0))  # retires v2 now; v1's wrapped secret is deleted
    billing = registry.snapshot()["billing"]
    assert [v.version for v in billing.versions] == [1, 2, 3]
    assert billing.version(1).secret is None  # type: ignore[union-attr]
    assert not any(first.secret in value for value in stored_values(engine))


def test_a_removed_source_disappears_from_the_snapshot_and_its_secrets_are_destroyed(
    registry: SourceRegistry, engine: Engine
) -> None:
    registry.add("outage", ["field_technician"])
    before = len(stored_values(engine))
    registry.remove("outage")
    assert "outage" not in registry.snapshot()
    assert len(stored_values(engine)) == before - 1
    with pytest.raises(SourceError, match="no source outage"):
        registry.rotate("outage")
    with pytest.raises(SourceError, match="no source outage"):
        registry.remove("outage")
    assert registry.ensure("outage", None) is None  # a removal is not undone behind one's back
    again = registry.add("outage", ["field_technician"])
    assert again.version == 2  # versions keep counting: an old token never matches again


def test_builtin_sources_are_created_once_with_their_roles_and_kinds(
    registry: SourceRegistry,
) -> None:
    cli = registry.ensure_builtin("cli")
    assert cli is not None and registry.ensure_builtin("cli") == cli
    sources = {s.name: s for s in registry.sources()}
    roles, kinds = BUILTIN_SOURCES["cli"]
    assert sources["cli"].roles == frozenset(roles)
    assert sources["cli"].destructive == frozenset(kinds)


def test_the_master_key_rotation_rewraps_source_secrets(engine: Engine, tmp_path: Path) -> None:
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    registry = SourceRegistry(engine, open_keystore(engine, old_key))
    credential = registry.add("web", ["system"])
    rotating = open_keystore(engine, new_key, old_key)
    assert rotating.rotate_master_key() >= 1
    only_new = SqlKeyStore(engine, load_master_key(new_key, create=False))
    assert SourceRegistry(engine, only_new).credential("web") == credential
    with pytest.raises(WrongMasterKeyError):
        SqlKeyStore(engine, load_master_key(old_key, create=False))
