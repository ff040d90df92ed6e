"""The people who sign in to the console: names, console roles and Argon2 password hashes, in
the pipeline's database (``LIFECYCLE_DB_URL``), beside the ledger.

Tables (created when missing):

* ``console_users``: name, role, Argon2id hash (argon2-cffi's defaults), when added.
* ``console_sign_in_failures``: failed sign-ins in a row per name (names that do not exist
  too, so a lock does not tell whether a name exists) and until when the name is locked.

A name is locked after ``lockout_failures`` failures in a row, for ``lockout_minutes``; while
locked even the right password is refused. A successful sign-in clears the count.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from core.db import create_tables
from core.errors import LifecycleError
from processors.requests import CONSOLE_ROLES

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD = 12

metadata = MetaData()

console_users = Table(
    "console_users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("added_at", String(32), nullable=False),
)

console_sign_in_failures = Table(
    "console_sign_in_failures",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", String(32), nullable=True),
)


class UserError(LifecycleError):
    """A user cannot be added or removed (names what is wrong)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    added_at: str

    @property
    def is_officer(self) -> bool:
        return self.role == "privacy_officer"


@dataclass(frozen=True, slots=True)
class SignIn:
    """The outcome of a sign-in: the user, or why not (``locked_until`` when locked)."""

    user: User | None
    locked_until: datetime | None = None


class UserStore:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        *,
        lockout_failures: int = 5,
        lockout_minutes: int = 15,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._failures = lockout_failures
        self._lock_for = timedelta(minutes=lockout_minutes)
        self._hasher = hasher or PasswordHasher()
        # a hash to verify against when the name does not exist: the answer takes as long
        self._decoy = self._hasher.hash("not a password of anyone here")
        create_tables(engine, metadata)

    def add(self, name: str, role: str, password: str) -> User:
        if not NAME.match(name):
            raise UserError(
                f"user name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if role not in CONSOLE_ROLES:
            raise UserError(f"role {role!r}: must be one of {', '.join(CONSOLE_ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
        added_at = self._clock().isoformat(timespec="seconds")
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(console_users).values(
                        name=name,
                        role=role,
                        password_hash=self._hasher.hash(password),
                        added_at=added_at,
                    )
                )
        except IntegrityError as exc:
            raise UserError(f"user {name!r} exists (remove it first to change it)") from exc
        return User(name, role, added_at)

    def remove(self, name: str) -> bool:
        with self._engine.begin() as conn:
            removed = conn.execute(delete(console_users).where(console_users.c.name == name))
            conn.execute(
                delete(console_sign_in_failures).where(console_sign_in_failures.c.name == name)
            )
        return bool(removed.rowcount)

    def list(self) -> list[User]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    console_users.c.name, console_users.c.role, console_users.c.added_at
                ).order_by(console_users.c.name)
            ).all()
        return [User(str(n), str(r), str(a)) for n, r, a in rows]

    def get(self, name: str) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(console_users.c.role, console_users.c.added_at).where(
                    console_users.c.name == name
                )
            ).first()
        return None if row is None else User(name, str(row[0]), str(row[1]))

    def is_empty(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(console_users.c.name).limit(1)).first() is None

    def sign_in(self, name: str, password: str) -> SignIn:
        """Check ``password`` for ``name``, counting failures and honouring the lock."""
        now = self._clock()
        name = name[:64]
        with self._engine.connect() as conn:
            failure = conn.execute(
                select(
                    console_sign_in_failures.c.failures, console_sign_in_failures.c.locked_until
                ).where(console_sign_in_failures.c.name == name)
            ).first()
            row = conn.execute(
                select(
                    console_users.c.role, console_users.c.password_hash, console_users.c.added_at
                ).where(console_users.c.name == name)
            ).first()
        if failure is not None and failure[1] is not None:
            until = datetime.fromisoformat(str(failure[1]))
            if now < until:
                return SignIn(None, locked_until=until)
        stored = str(row[1]) if row is not None else self._decoy
        try:
            self._hasher.verify(stored, password)
            matched = row is not None
        except (VerificationError, InvalidHashError):
            matched = False
        if not matched:
            return SignIn(None, locked_until=self._count_failure(name, now))
        with self._engine.begin() as conn:
            conn.execute(
                delete(console_sign_in_failures).where(console_sign_in_failures.c.name == name)
            )
            if self._hasher.check_needs_rehash(stored):
                conn.execute(
                    update(console_users)
                    .where(console_users.c.name == name)
                    .values(password_hash=self._hasher.hash(password))
                )
        assert row is not None
        return SignIn(User(name, str(row[0]), str(row[2])))

    def _count_failure(self, name: str, now: datetime) -> datetime | None:
        """One more failure for ``name``; the end of its lock when this one locks it."""
        with self._engine.begin() as conn:
            row = conn.execute(
                select(console_sign_in_failures.c.failures)
                .where(console_sign_in_failures.c.name == name)
                .with_for_update()
            ).first()
            failures = (int(row[0]) if row is not None else 0) + 1
            locked_until = None
            if failures >= self._failures:
                locked_until = now + self._lock_for
                failures = 0  # after the lock, a new run of attempts
            values = {
                "failures": failures,
                "locked_until": None if locked_until is None else locked_until.isoformat(),
            }
            if row is None:
                conn.execute(insert(console_sign_in_failures).values(name=name, **values))
            else:
                conn.execute(
                    update(console_sign_in_failures)
                    .where(console_sign_in_failures.c.name == name)
                    .values(**values)
                )
        return locked_until


__all__ = ["MIN_PASSWORD", "SignIn", "User", "UserError", "UserStore"]
