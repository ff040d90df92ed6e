"""Who sent it: every event (and every retention sweep request) is checked against the source
registry before anything is decided.

A record is authenticated when its ``auth`` field names a registered, active source, a
version of that source's secret still accepted now (the current one, or the previous one
during a rotation's grace period), and a MAC under that secret that matches the record's bytes
(:mod:`streams.sourceauth`). An event must also name, in its ``source`` field, the source that
authenticated it. Then it is authorized when the source may assert the event's actor role and,
for a destructive request, may file that kind (:data:`streams.sources.DESTRUCTIVE_KINDS`).

Refusals are decisions, not errors: ``source_unauthenticated`` or ``source_not_authorized``
(:mod:`processors.reasons`), citing PROTECTION OF CUSTOMER'S PERSONAL INFORMATION, published to
``privacy.violations`` and recorded in the ledger like any denial; the refused event changes
no state (no key is shredded, no consent changes, nothing is held).

**Seeing registry changes.** Workers keep a snapshot of the registry for
:data:`REGISTRY_TTL` seconds and read it again after that. An event naming a source or a secret
version the snapshot does not know makes it read again at once, at most once a batch: the read
comes after the batch was fetched, so after every event in it was published, and a source
registered (or a secret rotated) before its first event was published is known to it. A
removed source, or a change of roles or kinds, is seen within :data:`REGISTRY_TTL` seconds. A
rotated-out secret is refused from the end of its grace period (judged by the worker's clock),
or :data:`REGISTRY_TTL` seconds after the rotation when the grace period is shorter.

**Rollouts.** ``LIFECYCLE_AUTH_MODE=permit`` lets events and sweep requests that carry no MAC
at all through (counted in ``lifecycle_unauthenticated_permitted_total``); one that carries a
MAC is checked as under ``enforce`` (the default): a wrong MAC is never a rollout's artefact.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from core.clock import Clock
from core.settings import AUTH_MODES
from processors.reasons import SOURCE_NOT_AUTHORIZED, SOURCE_UNAUTHENTICATED
from schemas.kinds import RETENTION_SWEEP as SWEEP_KIND
from schemas.kinds import judged_as
from streams.sourceauth import mac_matches, signed_part
from streams.sources import (
    CONSENT_WITHDRAWAL,
    ERASURE,
    RETENTION_SWEEP,
    RegisteredSource,
    SourceRegistry,
)

ENFORCE: Final = AUTH_MODES[0]
PERMIT: Final = AUTH_MODES[1]

REGISTRY_TTL: Final = 5.0
"""Seconds a worker keeps its snapshot of the source registry."""

SECTION: Final = "PROTECTION OF CUSTOMER'S PERSONAL INFORMATION"
QUOTE: Final = (
    "employees are granted access to customers' data only if their job function/position "
    "requires them to have the access"
)
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

Sources = Mapping[str, RegisteredSource]


def _shown(name: str) -> str:
    """A name from a record, quoted, only when it looks like a name: anything else may be
    personal data put in the wrong field (a refusal's rule goes to the ledger and a topic)."""
    return repr(name) if _NAME.match(name) else "(a value that is not a name)"


def _path(name: str) -> str:
    return name if _NAME.match(name) else "(not a name)"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a record is refused: a reason code and a sentence naming the cause (names only)."""

    reason_code: str
    why: str
    source: str
    """The source the record names (or its MAC names), as the rule's path."""

    @property
    def rule(self) -> str:
        return f"sources.{_path(self.source) if self.source else '(none)'} [{SECTION}]: {self.why}"


def destructive_kind(event: Mapping[str, Any]) -> str | None:
    """The destructive kind an event files (None: not a destructive request)."""
    judged = judged_as(event["kind"])
    if judged == "erasure":
        return ERASURE
    if judged == "consent" and event["body"].get("granted") is False:
        return CONSENT_WITHDRAWAL
    return None


def authorize(
    source: RegisteredSource | None, name: str, role: str | None, kind: str | None
) -> Refusal | None:
    """Whether the registered ``source`` (named ``name``; None: not registered) may assert
    ``role`` (None: no role asserted) and file ``kind`` (a destructive kind, or None). Also the
    check for requests authenticated by other means (a signed-in console user, the dead-letter
    redrive command): see :meth:`SourceCheck.authorize`."""
    if source is None:
        return Refusal(SOURCE_UNAUTHENTICATED, f"{_shown(name)} is not a registered source", name)
    if role is not None and not source.may_assert(role):
        return _not_authorized(source, f"act as {_shown(role)}", source.describe_roles(), "assert")
    if kind is not None and not source.may_file(kind):
        return _not_authorized(
            source, f"file {kind} requests", source.describe_destructive(), "file"
        )
    return None


def _not_authorized(source: RegisteredSource, what: str, registered: str, verb: str) -> Refusal:
    why = f"source {source.name} is not registered to {what} (it may {verb}: {registered})"
    return Refusal(SOURCE_NOT_AUTHORIZED, why, source.name)


def authorize_registered(
    registry: SourceRegistry, source: str, role: str | None, kind: str | None
) -> Refusal | None:
    """:func:`authorize` against the registry as it is now: for a command or a service that
    acts as a registered source without a MAC on the bus (the dead-letter redrive asks
    ``authorize_registered(registry, "cli", None, "redrive")`` before it re-publishes; the
    console, for its own source and the signed-in officer's request)."""
    return authorize(registry.snapshot().get(source), source, role, kind)


def authenticate(
    sources: Sources, value: bytes, auth: Mapping[str, Any] | None, named: str | None, at: datetime
) -> tuple[RegisteredSource | None, Refusal | None]:
    """The registered source whose MAC ``value`` carries (``auth``, decoded from it), or the
    refusal. ``named``: the source the record's own ``source`` field names (events), which
    must be the authenticating one."""
    label = named or ""
    if auth is None:
        return None, Refusal(SOURCE_UNAUTHENTICATED, "the record carries no source MAC", label)
    name = auth["source"]
    if named is not None and name != named:
        return None, Refusal(
            SOURCE_UNAUTHENTICATED,
            f"the record names source {_shown(named)} but its MAC is {_shown(name)}'s",
            label,
        )
    source = sources.get(name)
    if source is None:
        why = f"{_shown(name)} is not a registered source (or was removed)"
        return None, Refusal(SOURCE_UNAUTHENTICATED, why, name)
    version = source.version(auth["key_version"])
    if version is None:
        why = f"source {name} has no secret version {auth['key_version']}"
        return None, Refusal(SOURCE_UNAUTHENTICATED, why, name)
    if not version.accepted_at(at):
        ended = "" if version.expires_at is None else f" at {version.expires_at.isoformat()}"
        why = f"secret version {version.version} of source {name} was retired{ended}"
        return None, Refusal(SOURCE_UNAUTHENTICATED, why, name)
    if version.secret is None:
        why = (
            f"secret version {version.version} of source {name} is not available to this "
            "worker (destroyed, or wrapped under a master key it does not hold)"
        )
        return None, Refusal(SOURCE_UNAUTHENTICATED, why, name)
    signed = signed_part(value, auth)
    if signed is None or not mac_matches(version.secret, signed, auth["mac"]):
        why = (
            f"the MAC does not match the record: it was changed after source {name} "
            "signed it, or signed with another secret"
        )
        return None, Refusal(SOURCE_UNAUTHENTICATED, why, name)
    return source, None


def _needs_fresh_registry(refusal: Refusal) -> bool:
    why = refusal.why
    return "is not a registered source" in why or "has no secret version" in why


class SourceCheck:
    """The registry check a worker runs on every event (see module docstring).

    ``load`` reads the registry (:meth:`streams.sources.SourceRegistry.snapshot`, retried by
    the caller while the database is down); ``clock`` says when a rotation's grace ended;
    ``on_permitted(kind)`` counts an event let through without a MAC under ``permit``.
    """

    def __init__(
        self,
        load: Callable[[], Sources],
        *,
        clock: Clock,
        mode: str = ENFORCE,
        on_permitted: Callable[[str], None] | None = None,
        ttl: float = REGISTRY_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"auth mode must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
        self._load = load
        self._clock = clock
        self.mode = mode
        self._on_permitted = on_permitted
        self._ttl = ttl
        self._monotonic = monotonic
        self._sources: Sources = {}
        self._read_at: float | None = None
        self._read_in_batch = False

    def new_batch(self) -> None:
        """The records checked from now on were fetched after this call: an unknown source or
        version among them is worth one more read of the registry."""
        self._read_in_batch = False

    def sources(self, *, fresh: bool = False) -> Sources:
        """The registry as last read; read again when older than the TTL, or when ``fresh``
        and not read yet since :meth:`new_batch`."""
        now = self._monotonic()
        stale = self._read_at is None or now - self._read_at >= self._ttl
        if stale or (fresh and not self._read_in_batch):
            self._sources = self._load()
            self._read_at = now
            self._read_in_batch = True
        return self._sources

    def _authenticate(
        self, value: bytes, auth: Mapping[str, Any] | None, named: str | None
    ) -> tuple[RegisteredSource | None, Refusal | None]:
        at = self._clock()
        source, refusal = authenticate(self.sources(), value, auth, named, at)
        if refusal is not None and _needs_fresh_registry(refusal):
            source, refusal = authenticate(self.sources(fresh=True), value, auth, named, at)
        return source, refusal

    def check_event(self, event: Mapping[str, Any], value: bytes) -> Refusal | None:
        """None when ``event`` (decoded from ``value``) may be decided; else why not."""
        auth = event.get("auth")
        if auth is None and self.mode == PERMIT:
            if self._on_permitted is not None:
                self._on_permitted(event["kind"])
            return None
        source, refusal = self._authenticate(value, auth, event["source"])
        if refusal is not None:
            return refusal
        return authorize(source, event["source"], event["actor"]["role"], destructive_kind(event))

    def check_sweep(self, sweep: Mapping[str, Any], value: bytes) -> Refusal | None:
        """None when a retention sweep request (decoded from ``value``) may be carried out."""
        auth = sweep.get("auth")
        if auth is None and self.mode == PERMIT:
            if self._on_permitted is not None:
                self._on_permitted(SWEEP_KIND)
            return None
        source, refusal = self._authenticate(value, auth, None)
        if refusal is not None:
            return refusal
        assert source is not None
        return authorize(source, source.name, None, RETENTION_SWEEP)

    def authorize(self, source: str, role: str | None, kind: str | None) -> Refusal | None:
        """Whether registered ``source`` may assert ``role`` and file ``kind``, for a request
        authenticated by other means than a MAC on the bus (e.g. the dead-letter redrive
        command asks ``authorize("cli", None, "redrive")``)."""
        sources = self.sources()
        if source not in sources:
            sources = self.sources(fresh=True)
        return authorize(sources.get(source), source, role, kind)
