"""The source registry: which systems may publish, which roles they may assert, which
destructive requests they may file, and their secrets. Shared by every process through the
database of the key store (``LIFECYCLE_DB_URL``).

* ``sources``: one row per source: its roles (``*``: every role the policy knows), the
  destructive kinds it may file (:data:`DESTRUCTIVE_KINDS`), and when it was removed (a
  removed source keeps its row, so its secret versions keep counting up if it comes back).
* ``source_secrets``: one row per version of a source's secret: when it was made and, once a
  newer one replaced it, until when it is still accepted (the rotation's grace period).
* The secrets themselves are in ``keystore_meta``, wrapped under the master key like the key
  store's own keys, under the name ``source/NAME/vVERSION``: ``lifecycle keys rotate`` re-wraps
  them with the rest. A retired or removed version's wrapped secret is deleted.

Anyone holding the master key and the database can read every secret (:meth:`credential`):
the command line and the console use that to sign as their own built-in sources. Workers read
a :meth:`snapshot`; :mod:`processors.authentication` keeps it for a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from core.clock import Clock, SystemClock
from core.db import create_tables
from core.instants import aware
from core.logging import get_logger
from streams.exceptions import SourceError, WrongMasterKeyError
from streams.keys import EnvelopeKeyStore
from streams.keys.tables import keystore_meta
from streams.sourceauth import SourceCredential, check_name, new_secret

log = get_logger(__name__)

ERASURE: Final = "erasure"
CONSENT_WITHDRAWAL: Final = "consent_withdrawal"
RETENTION_SWEEP: Final = "retention_sweep"
REDRIVE: Final = "redrive"
DESTRUCTIVE_KINDS: Final = (ERASURE, CONSENT_WITHDRAWAL, RETENTION_SWEEP, REDRIVE)
"""Requests that destroy or change what the pipeline holds, filed only by sources registered
for them: erasure requests (``deletion_requested``), consent withdrawals (``consent_changed``
with ``granted`` false), retention sweeps, and dead-letter redrives."""
EVERY: Final = "*"
"""Stored for ``--roles all`` / ``--destructive all``: every role (or kind), present and future."""

DEFAULT_GRACE: Final = timedelta(hours=24)
"""How long a rotated-out secret is still accepted, unless ``sources rotate --grace`` says."""

BUILTIN_SOURCES: Final[Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # name: (roles, destructive kinds); created on first use, never printed
    "cli": (("privacy_officer", "system"), DESTRUCTIVE_KINDS),
    "console": (("privacy_officer",), (ERASURE, CONSENT_WITHDRAWAL, REDRIVE)),
}
"""The pipeline's own sources: ``lifecycle erase`` and ``retention sweep`` sign as ``cli``, the
privacy team's console as ``console``, each acting for a named officer."""

metadata = MetaData()

sources_table = Table(
    "sources",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("roles", Text, nullable=False),
    Column("destructive", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("removed_at", DateTime(timezone=True), nullable=True),
)

source_secrets = Table(
    "source_secrets",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # NULL: the current one
)


def _secret_label(name: str, version: int) -> str:
    return f"source/{name}/v{version}"


def _names(values: Iterable[str] | None) -> str:
    if values is None:
        return EVERY
    return ",".join(sorted(set(values)))


def _read_names(text: str) -> frozenset[str] | None:
    if text == EVERY:
        return None
    return frozenset(name for name in text.split(",") if name)


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One version of a source's secret (its bytes only in a :meth:`SourceRegistry.snapshot`)."""

    version: int
    created_at: datetime
    expires_at: datetime | None
    """None while it is the current version; else the end of its grace period."""
    secret: bytes | None = field(default=None, repr=False)

    def accepted_at(self, at: datetime) -> bool:
        return self.expires_at is None or at < self.expires_at


@dataclass(frozen=True, slots=True)
class RegisteredSource:
    """A source as registered: what it may assert and file, and its secret versions."""

    name: str
    roles: frozenset[str] | None
    """The roles its events may name as actor (None: every role)."""
    destructive: frozenset[str]
    """The destructive kinds it may file (:data:`DESTRUCTIVE_KINDS`)."""
    created_at: datetime
    updated_at: datetime
    removed_at: datetime | None = None
    versions: tuple[SecretVersion, ...] = ()

    @property
    def current_version(self) -> int | None:
        current = [v.version for v in self.versions if v.expires_at is None]
        return max(current) if current else None

    def may_assert(self, role: str) -> bool:
        return self.roles is None or role in self.roles

    def may_file(self, kind: str) -> bool:
        return kind in self.destructive

    def version(self, number: int) -> SecretVersion | None:
        for version in self.versions:
            if version.version == number:
                return version
        return None

    def describe_roles(self) -> str:
        return "all" if self.roles is None else ",".join(sorted(self.roles)) or "-"

    def describe_destructive(self) -> str:
        if set(self.destructive) >= set(DESTRUCTIVE_KINDS):
            return "all"
        return ",".join(k for k in DESTRUCTIVE_KINDS if k in self.destructive) or "-"


def parse_destructive(text: str) -> tuple[str, ...]:
    """``--destructive``'s value: kinds separated by commas, ``all``, or ``none``."""
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    if wanted == ["all"]:
        return DESTRUCTIVE_KINDS
    if wanted in ([], ["none"]):
        return ()
    unknown = [kind for kind in wanted if kind not in DESTRUCTIVE_KINDS]
    if unknown:
        raise SourceError(
            f"unknown destructive kind {unknown[0]!r}; expected some of "
            f"{', '.join(DESTRUCTIVE_KINDS)}, or all"
        )
    return tuple(dict.fromkeys(wanted))


class SourceRegistry:
    """The registry in a SQLAlchemy database, secrets wrapped by ``keystore``'s master key."""

    def __init__(
        self,
        engine: Engine,
        keystore: EnvelopeKeyStore,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._engine = engine
        self._keys = keystore
        self._clock: Clock = clock or SystemClock()
        create_tables(engine, metadata)

    # -- changes (the command line) ---------------------------------------------------

    def add(
        self,
        name: str,
        roles: Iterable[str] | None,
        destructive: Iterable[str] = (),
        *,
        secret: bytes | None = None,
    ) -> SourceCredential:
        """Register ``name`` (again, when it was removed) and make its first secret; the
        credential to hand to the source. ``roles`` None: every role."""
        check_name(name)
        kinds = tuple(destructive)
        parse_destructive(",".join(kinds) or "none")  # names only known kinds
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                row = conn.execute(
                    select(sources_table.c.removed_at).where(sources_table.c.name == name)
                ).first()
                values = {
                    "roles": _names(roles),
                    "destructive": _names(kinds),
                    "updated_at": now,
                    "removed_at": None,
                }
                if row is None:
                    conn.execute(sources_table.insert().values(name=name, created_at=now, **values))
                elif row[0] is None:
                    raise SourceError(
                        f"source {name} is registered already "
                        f"(lifecycle sources rotate {name} gives it a new secret)"
                    )
                else:
                    conn.execute(
                        update(sources_table).where(sources_table.c.name == name).values(**values)
                    )
                return self._new_version(conn, name, secret or new_secret(), now)
        except IntegrityError:
            raise SourceError(f"source {name} is registered already") from None

    def ensure(
        self,
        name: str,
        roles: Iterable[str] | None,
        destructive: Iterable[str] = (),
        *,
        secret: bytes | None = None,
    ) -> SourceCredential | None:
        """The current credential of ``name``, registering it first when it never was; None
        when it was removed (an operator's removal is not undone behind their back)."""
        state = self._state(name)
        if state == "absent":
            try:
                return self.add(name, roles, destructive, secret=secret)
            except SourceError:
                state = self._state(name)  # another process registered it first
        if state == "removed":
            return None
        return self.credential(name)

    def ensure_builtin(self, name: str) -> SourceCredential | None:
        """The credential of a built-in source (:data:`BUILTIN_SOURCES`), created on first use."""
        roles, destructive = BUILTIN_SOURCES[name]
        return self.ensure(name, roles, destructive)

    def rotate(self, name: str, grace: timedelta = DEFAULT_GRACE) -> SourceCredential:
        """A new secret for ``name``; the current one is still accepted for ``grace``, then
        refused. Versions whose grace ran out lose their wrapped secret."""
        if grace < timedelta(0):
            raise SourceError("the grace period cannot be negative")
        now = self._clock()
        with self._engine.begin() as conn:
            self._require_active(conn, name)
            ends = now + grace
            conn.execute(
                update(source_secrets)
                .where(source_secrets.c.name == name, source_secrets.c.expires_at.is_(None))
                .values(expires_at=ends)
            )
            self._forget_expired(conn, name, now)
            conn.execute(
                update(sources_table).where(sources_table.c.name == name).values(updated_at=now)
            )
            return self._new_version(conn, name, new_secret(), now)

    def remove(self, name: str) -> None:
        """Refuse ``name``'s events from now on (workers notice within their cache's lifetime)
        and destroy its secrets."""
        now = self._clock()
        with self._engine.begin() as conn:
            self._require_active(conn, name)
            conn.execute(
                update(sources_table)
                .where(sources_table.c.name == name)
                .values(removed_at=now, updated_at=now)
            )
            conn.execute(
                update(source_secrets)
                .where(
                    source_secrets.c.name == name,
                    (source_secrets.c.expires_at.is_(None)) | (source_secrets.c.expires_at > now),
                )
                .values(expires_at=now)
            )
            self._forget_expired(conn, name, now, inclusive=True)

    # -- reading ----------------------------------------------------------------------

    def sources(self, *, include_removed: bool = False) -> list[RegisteredSource]:
        """Every source (without secrets), by name."""
        with self._engine.connect() as conn:
            return sorted(
                self._read(conn, with_secrets=False, include_removed=include_removed).values(),
                key=lambda s: s.name,
            )

    def snapshot(self) -> dict[str, RegisteredSource]:
        """Every active source with the secrets of its versions still accepted (for workers;
        a retired version is listed without its secret)."""
        with self._engine.connect() as conn:
            return self._read(conn, with_secrets=True, include_removed=False)

    def credential(self, name: str) -> SourceCredential:
        """The current credential of ``name`` (for processes holding the master key)."""
        with self._engine.connect() as conn:
            found = self._read(conn, with_secrets=True, include_removed=False, only=name)
        source = found.get(name)
        if source is None:
            raise SourceError(f"no source {name} is registered (lifecycle sources list)")
        current = source.current_version
        version = None if current is None else source.version(current)
        if version is None or version.secret is None:
            raise SourceError(f"source {name} has no current secret")
        return SourceCredential(name, version.version, version.secret)

    # -- internals --------------------------------------------------------------------

    def _state(self, name: str) -> str:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(sources_table.c.removed_at).where(sources_table.c.name == name)
            ).first()
        if row is None:
            return "absent"
        return "active" if row[0] is None else "removed"

    def _require_active(self, conn: Connection, name: str) -> None:
        row = conn.execute(
            select(sources_table.c.removed_at).where(sources_table.c.name == name)
        ).first()
        if row is None or row[0] is not None:
            raise SourceError(f"no source {name} is registered (lifecycle sources list)")

    def _new_version(
        self, conn: Connection, name: str, secret: bytes, now: datetime
    ) -> SourceCredential:
        latest = conn.execute(
            select(func.max(source_secrets.c.version)).where(source_secrets.c.name == name)
        ).scalar_one_or_none()
        version = int(latest or 0) + 1
        credential = SourceCredential(name, version, secret)  # checks the secret's length
        label = _secret_label(name, version)
        conn.execute(source_secrets.insert().values(name=name, version=version, created_at=now))
        conn.execute(
            keystore_meta.insert().values(name=label, value=self._keys.wrap_secret(label, secret))
        )
        return credential

    def _forget_expired(
        self, conn: Connection, name: str, now: datetime, *, inclusive: bool = False
    ) -> None:
        """Delete the wrapped secrets of ``name``'s versions no longer accepted."""
        expires = source_secrets.c.expires_at
        ended = expires <= now if inclusive else expires < now
        versions = conn.execute(
            select(source_secrets.c.version).where(
                and_(source_secrets.c.name == name, source_secrets.c.expires_at.is_not(None), ended)
            )
        ).scalars()
        labels = [_secret_label(name, version) for version in versions]
        if labels:
            conn.execute(delete(keystore_meta).where(keystore_meta.c.name.in_(labels)))

    def _read(
        self,
        conn: Connection,
        *,
        with_secrets: bool,
        include_removed: bool,
        only: str | None = None,
    ) -> dict[str, RegisteredSource]:
        query = select(sources_table)
        versions_query = select(source_secrets).order_by(
            source_secrets.c.name, source_secrets.c.version
        )
        if only is not None:
            query = query.where(sources_table.c.name == only)
            versions_query = versions_query.where(source_secrets.c.name == only)
        rows = conn.execute(query).mappings().all()
        versions: dict[str, list[SecretVersion]] = {}
        for row in conn.execute(versions_query).mappings():
            versions.setdefault(row["name"], []).append(
                SecretVersion(
                    row["version"],
                    aware(row["created_at"]),
                    None if row["expires_at"] is None else aware(row["expires_at"]),
                )
            )
        wrapped: dict[str, bytes] = {}
        if with_secrets:
            prefix = "source/" if only is None else f"source/{only}/"
            wrapped = {
                name: value
                for name, value in conn.execute(
                    select(keystore_meta.c.name, keystore_meta.c.value).where(
                        keystore_meta.c.name.startswith(prefix, autoescape=True)
                    )
                )
            }
        now = self._clock()
        out: dict[str, RegisteredSource] = {}
        for row in rows:
            if row["removed_at"] is not None and not include_removed:
                continue
            name = row["name"]
            kept = []
            for version in versions.get(name, []):
                label = _secret_label(name, version.version)
                if with_secrets and label in wrapped and version.accepted_at(now):
                    try:
                        secret = self._keys.unwrap_secret(label, wrapped[label])
                    except WrongMasterKeyError:  # wrapped under a master key this process lacks
                        log.warning("sources.secret_unopenable", source=name, version=label)
                    else:
                        version = SecretVersion(
                            version.version, version.created_at, version.expires_at, secret
                        )
                kept.append(version)
            destructive = _read_names(row["destructive"])
            out[name] = RegisteredSource(
                name,
                _read_names(row["roles"]),
                frozenset(DESTRUCTIVE_KINDS if destructive is None else destructive),
                aware(row["created_at"]),
                aware(row["updated_at"]),
                None if row["removed_at"] is None else aware(row["removed_at"]),
                tuple(kept),
            )
        return out
