"""Source authentication on the bus: which registered source vouches for a record.

A source (an upstream system, the command line, the console) holds a secret shared with the
pipeline. Its publisher appends to every record a :class:`lifecycle.SourceAuth` (the source's
name, the secret's version and an HMAC-SHA256); workers check it before deciding anything.

**What the MAC covers.** Every byte of the record as it travels before the MAC itself: the
wire header (the writer schema's fingerprint, or the registry's schema id), every field of the
record (event id, kind, times, source, subject_ref, the encrypted subject, actor, the body with
its ciphertexts), then the ``auth`` field's own source name and key version. The Avro binary
encoding is the canonical form: it is what the worker decodes, so no second encoding has to be
kept in step with the schema, and a field added later is covered without a change here.

This works because ``auth`` is the record's **last field**: a record encoded with ``auth``
null ends with the union's null branch (one zero byte); :func:`seal` replaces that byte with
the other branch, the source name and the key version, computes the MAC over everything so
far, and appends it. A reader strips the MAC's bytes (:func:`signed_part`) and recomputes it.
Records from publishers without a secret carry ``auth`` null; records written before the field
existed decode with ``auth`` null too (the schema's default).

Secrets travel as a one-line **token**, ``lcs1:NAME:VERSION:SECRET`` (the secret in unpadded
URL-safe base64), printed once by ``lifecycle sources add`` and ``rotate`` and kept by the
source in a file (``LIFECYCLE_SOURCE_SECRET_FILE``, mode 0600, one token a line).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.logging import get_logger
from streams.exceptions import EncodeError, SourceError

log = get_logger(__name__)

DOMAIN = b"lifecycle source MAC v1\n"
"""Prefixed to every MAC's input: a source secret never authenticates anything else."""
MAC_LEN = 32
SECRET_LEN = 32
TOKEN_PREFIX = "lcs1"  # noqa: S105 (a format marker, not a secret)
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
"""Registered source names: lower-case, a letter first, at most 40 characters."""

_NULL_BRANCH = b"\x00"
_AUTH_BRANCH = b"\x02"  # zig-zag varint of union branch 1 (lifecycle.SourceAuth)
_MAC_LENGTH_PREFIX = b"\x40"  # zig-zag varint of 32, the length of the mac bytes
_RELOAD_EVERY = 1.0  # seconds between two looks at a secret file's modification time


def _varint(value: int) -> bytes:
    """Avro's zig-zag varint of ``value`` (int and long)."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return _varint(len(data)) + data


def check_name(name: str) -> str:
    """``name`` when it can name a source; SourceError otherwise."""
    if not SOURCE_NAME.match(name):
        raise SourceError(
            "a source name is 1-40 lower-case letters, digits, '_' or '-', starting with a letter"
        )
    return name


class SourceCredential:
    """One version of a source's secret, as its publisher holds it."""

    __slots__ = ("_keyed", "auth_head", "name", "secret", "version")

    def __init__(self, name: str, version: int, secret: bytes) -> None:
        if len(secret) != SECRET_LEN:
            raise SourceError(f"a source secret is {SECRET_LEN} bytes, got {len(secret)}")
        if version < 1:
            raise SourceError(f"a source secret's version is at least 1, got {version}")
        self.name = check_name(name)
        self.version = version
        self.secret = secret
        self._keyed = hmac.new(secret, DOMAIN, hashlib.sha256)  # copied for every MAC
        self.auth_head = _AUTH_BRANCH + _string(name) + _varint(version)
        """What replaces a record's empty ``auth``, up to the MAC: the union branch, the
        source's name and the secret's version."""

    def __repr__(self) -> str:  # never the secret
        return f"SourceCredential({self.name!r}, version={self.version})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SourceCredential)
            and (self.name, self.version) == (other.name, other.version)
            and hmac.compare_digest(self.secret, other.secret)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.version))

    def mac(self, *parts: bytes | memoryview) -> bytes:
        """The MAC of the concatenation of ``parts``."""
        keyed = self._keyed.copy()
        for part in parts:
            keyed.update(part)
        return keyed.digest()

    def token(self) -> str:
        """The one-line form printed to the operator and kept in the source's secret file."""
        secret = base64.urlsafe_b64encode(self.secret).rstrip(b"=").decode()
        return f"{TOKEN_PREFIX}:{self.name}:{self.version}:{secret}"

    @classmethod
    def parse(cls, token: str) -> SourceCredential:
        """The credential a token holds; SourceError (never quoting the token) otherwise."""
        parts = token.strip().split(":")
        if len(parts) != 4 or parts[0] != TOKEN_PREFIX:
            raise SourceError(f"not a source secret token (expected {TOKEN_PREFIX}:NAME:VERSION:…)")
        _, name, version, secret = parts
        try:
            number = int(version)
            raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        except ValueError:
            raise SourceError("a source secret token's version or secret is malformed") from None
        return cls(name, number, raw)


def new_secret() -> bytes:
    return os.urandom(SECRET_LEN)


# --------------------------------------------------------------------------- records


def seal(value: bytes, credential: SourceCredential) -> bytes:
    """``value`` (a record encoded with ``auth`` null, its last field) authenticated by
    ``credential``: the null branch replaced by a ``SourceAuth`` whose MAC covers the rest."""
    if value[-1:] != _NULL_BRANCH:
        raise EncodeError("the record does not end with an empty auth field")
    record = memoryview(value)[:-1]
    head = credential.auth_head
    return b"".join((record, head, _MAC_LENGTH_PREFIX, credential.mac(record, head)))


def signed_part(value: bytes, auth: Mapping[str, Any]) -> memoryview | None:
    """The bytes of ``value`` that ``auth["mac"]`` covers, or None when ``auth`` (decoded from
    ``value``) is not exactly the encoding ``value`` ends with (a MAC of the wrong length, a
    non-canonical encoding): such a record cannot be authenticated."""
    mac = auth["mac"]
    if len(mac) != MAC_LEN:
        return None
    tail = b"".join(
        (
            _AUTH_BRANCH,
            _string(auth["source"]),
            _varint(auth["key_version"]),
            _MAC_LENGTH_PREFIX,
            mac,
        )
    )
    if not value.endswith(tail):
        return None
    return memoryview(value)[: len(value) - MAC_LEN - len(_MAC_LENGTH_PREFIX)]


_KEYED: dict[bytes, Any] = {}
"""secret -> an HMAC already fed the key and :data:`DOMAIN` (copied for each check: a
worker checks every event against a handful of secrets)."""
_KEYED_LIMIT = 256


def mac_matches(secret: bytes, signed: bytes | memoryview, mac: bytes) -> bool:
    """Whether ``mac`` is the MAC of ``signed`` under ``secret`` (constant-time compare)."""
    keyed = _KEYED.get(secret)
    if keyed is None:
        if len(_KEYED) >= _KEYED_LIMIT:
            _KEYED.clear()
        keyed = _KEYED[secret] = hmac.new(secret, DOMAIN, hashlib.sha256)
    check = keyed.copy()
    check.update(signed)
    return hmac.compare_digest(check.digest(), mac)


# --------------------------------------------------------------------------- a publisher's


class SourceCredentials:
    """The credentials a publisher signs with, by source name (usually one).

    Loaded from a secret file (:meth:`from_file`) they follow the file: a rotated secret
    written into it is picked up at the next :meth:`refresh` (publishers call it once per
    chunk of events, and it looks at the file at most once a second), without a restart.
    """

    def __init__(
        self, credentials: Iterable[SourceCredential] = (), *, path: Path | None = None
    ) -> None:
        self._by_name: dict[str, SourceCredential] = {}
        for credential in credentials:
            self._by_name[credential.name] = credential
        self._path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._next_look = 0.0
        if path is not None:
            self._load()

    @classmethod
    def from_file(cls, path: Path) -> SourceCredentials:
        return cls(path=path)

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, source: str) -> SourceCredential | None:
        return self._by_name.get(source)

    def refresh(self) -> None:
        """Re-read the secret file when it changed (at most one look a second)."""
        if self._path is None:
            return
        now = time.monotonic()
        if now < self._next_look:
            return
        with self._lock:
            self._next_look = now + _RELOAD_EVERY
            try:
                info = self._path.stat()
            except OSError:
                return  # being replaced: keep what we have
            if (info.st_mtime_ns, info.st_size) != self._seen:
                try:
                    self._load()
                except SourceError as exc:  # half-written or wrong: keep signing as before
                    log.warning("sources.secret_file_unreadable", error=str(exc))

    def _load(self) -> None:
        path = self._path
        assert path is not None
        try:
            info = path.stat()
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise SourceError(
                    f"source secret file {path} is readable by others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
                )
            text = path.read_text()
        except OSError as exc:
            raise SourceError(f"cannot read source secret file {path}: {exc.strerror}") from None
        loaded: dict[str, SourceCredential] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                credential = SourceCredential.parse(line)
            except SourceError as exc:
                raise SourceError(f"{path}, line {number}: {exc}") from None
            known = loaded.get(credential.name)
            if known is None or credential.version > known.version:
                loaded[credential.name] = credential  # the newest version of each source
        if not loaded:
            raise SourceError(f"source secret file {path} holds no token")
        self._by_name = loaded
        self._seen = (info.st_mtime_ns, info.st_size)
