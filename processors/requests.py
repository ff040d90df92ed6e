"""What the privacy team does about customers' requests, as records on the audit ledger.

Filing an access or erasure request, extending the time to answer it, refusing it, closing it,
and revealing a customer's values to a privacy officer are recorded like every decision: each
is a ``lifecycle.Decision`` published to ``privacy.decisions``, which the ledger stage appends
to the hash chain and republishes on ``privacy.audit``. So the chain, ``audit verify``,
``audit export`` and ``audit replay`` cover them with nothing added.

The record kinds (``kind``) and how they use the decision's fields:

==================  ==============================================================
``request_filed``   a customer's request received and filed (``purpose``: ``erasure`` or
                    ``access``; ``categories``: those an erasure names, none for all)
``request_extended`` the time to answer extended (``reason_code``: the policy's reason)
``request_refused``  the request refused on a ground the law allows (``reason_code``: it)
``request_closed``   an access request answered: its report produced for the customer
``values_revealed``  a customer's values shown to a privacy officer (``categories``: which;
                    never a value)
==================  ==============================================================

For all of them ``source`` says where it happened (``console`` or ``cli``), ``recipient``
names the person who acted (a console user, or the command line's operating-system user; for
a reveal, the one the values were shown to), ``actor_role`` that person's console role, ``rule``
the provision of the policy's request clock (or the policy rule) that allows it, and
``policy_version`` the policy version whose clock applies (the one in force when the request
was received). The position fields are -1: the record does not come from ``customer.events``.

An action the console refuses (a role that may not reveal or file, an extension the policy
does not allow) is recorded too, as ``deny`` with ``role_not_authorized`` or
``extension_not_permitted``: the attempt is part of the audit trail.

Event ids name the request: ``request/<request id>/filed`` (``/extended/<n>``, ``/refused``,
``/closed``). The ledger keeps one record per event id, so the n-th extension of a request is
recorded once however many officers ask for it at the same moment.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from processors.policy import Policy, RequestClock
from processors.reasons import ALLOWED, ROLE_NOT_AUTHORIZED
from streams.codec import Codec
from streams.exceptions import PublishError
from streams.outbox import Outbox
from streams.topics import DECISIONS

REQUEST_FILED: Final = "request_filed"
REQUEST_EXTENDED: Final = "request_extended"
REQUEST_REFUSED: Final = "request_refused"
REQUEST_CLOSED: Final = "request_closed"
VALUES_REVEALED: Final = "values_revealed"
RECORD_KINDS: Final = frozenset(
    {REQUEST_FILED, REQUEST_EXTENDED, REQUEST_REFUSED, REQUEST_CLOSED, VALUES_REVEALED}
)
"""The ledger record kinds of the privacy team's actions (see the module docstring)."""

ERASURE: Final = "erasure"
ACCESS: Final = "access"
REQUEST_KINDS: Final = (ERASURE, ACCESS)

EXTENSION_NOT_PERMITTED: Final = "extension_not_permitted"
"""Reason code of a refused extension: none allowed, all used, past the date by which an
extension must be recorded, a reason the policy does not list, or the request is closed."""

CONSOLE_ROLES: Final = ("privacy_officer", "analyst", "auditor")
"""Who signs in to the console (not policy roles): a privacy officer files requests and
reveals values; analysts and auditors read categories, decisions and the audit."""
PRIVACY_OFFICER: Final = "privacy_officer"

_REQUEST_PREFIX = "request/"


@dataclass(frozen=True, slots=True)
class Staff:
    """Who acts: a person's name, console role, and where (``console`` or ``cli``)."""

    name: str
    role: str
    via: str


@dataclass(frozen=True, slots=True)
class RequestRef:
    """What an event id of a request record names."""

    request_id: str
    action: str
    number: int = 1


def request_event_id(request_id: str, action: str, number: int = 1) -> str:
    """The event id of a request record (``action``: filed, extended, refused, closed)."""
    if action == "extended":
        return f"{_REQUEST_PREFIX}{request_id}/extended/{number}"
    return f"{_REQUEST_PREFIX}{request_id}/{action}"


def parse_request_event_id(event_id: str) -> RequestRef | None:
    """The request an event id made by :func:`request_event_id` names (None for any other)."""
    if not event_id.startswith(_REQUEST_PREFIX):
        return None
    rest = event_id[len(_REQUEST_PREFIX) :]
    head, _, last = rest.rpartition("/")
    if last.isdigit():
        request_id, _, action = head.rpartition("/")
        if action == "extended" and request_id:
            return RequestRef(request_id, action, int(last))
        return None
    if head and last in ("filed", "refused", "closed"):
        return RequestRef(head, last)
    return None


def new_request_id() -> str:
    return f"REQ-{uuid.uuid4()}"


def _record(
    *,
    event_id: str,
    kind: str,
    staff: Staff,
    subject_ref: str,
    purpose: str | None,
    categories: Iterable[str],
    decision: str,
    reason_code: str,
    rule: str,
    policy_version: str,
    at: datetime,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": kind,
        "subject_ref": subject_ref,
        "source": staff.via,
        "categories": sorted(set(categories)),
        "purpose": purpose,
        "purposes": [],
        "consent_granted": None,
        "recipient": staff.name,
        "actor_role": staff.role,
        "decision": decision,
        "reason_code": reason_code,
        "rule": rule,
        "policy_version": policy_version,
        "occurred_at": at,
        "decided_at": at,
        "source_partition": -1,
        "source_offset": -1,
        "erasure": None,
    }


def _clock_rule(clock: RequestClock | None, part: str) -> str:
    if clock is None:
        return f"request_clock.{part}: the policy version states no request clock"
    cites = {
        "answer": clock.answer_cites,
        "extension": clock.extension.cites if clock.extension is not None else None,
    }.get(part)
    if cites is None:
        return f"request_clock.{part} ({clock.law})"
    return f"request_clock.{part} ({cites})"


def filed(
    staff: Staff,
    *,
    request_id: str,
    request_kind: str,
    subject_ref: str,
    categories: Sequence[str],
    policy: Policy,
    at: datetime,
) -> dict[str, Any]:
    """The record of a request received and filed now (its clock starts at ``at``)."""
    if request_kind not in REQUEST_KINDS:
        raise ValueError(f"request kind must be one of {', '.join(REQUEST_KINDS)}")
    return _record(
        event_id=request_event_id(request_id, "filed"),
        kind=REQUEST_FILED,
        staff=staff,
        subject_ref=subject_ref,
        purpose=request_kind,
        categories=categories,
        decision="allow",
        reason_code=ALLOWED,
        rule=_clock_rule(policy.request_clock, "answer"),
        policy_version=policy.version,
        at=at,
    )


def extended(
    staff: Staff,
    *,
    request_id: str,
    request_kind: str,
    subject_ref: str,
    number: int,
    reason: str,
    policy: Policy,
    at: datetime,
) -> dict[str, Any]:
    """The record of the ``number``-th extension of a request, for ``reason``."""
    return _record(
        event_id=request_event_id(request_id, "extended", number),
        kind=REQUEST_EXTENDED,
        staff=staff,
        subject_ref=subject_ref,
        purpose=request_kind,
        categories=(),
        decision="allow",
        reason_code=reason,
        rule=_clock_rule(policy.request_clock, "extension"),
        policy_version=policy.version,
        at=at,
    )


def refused(
    staff: Staff,
    *,
    request_id: str,
    request_kind: str,
    subject_ref: str,
    ground: str,
    policy: Policy,
    at: datetime,
) -> dict[str, Any]:
    """The record of a request refused on ``ground`` (one of the policy's refusal grounds)."""
    clock = policy.request_clock
    cites = clock.refusals[ground].cites if clock is not None else None
    return _record(
        event_id=request_event_id(request_id, "refused"),
        kind=REQUEST_REFUSED,
        staff=staff,
        subject_ref=subject_ref,
        purpose=request_kind,
        categories=(),
        decision="deny",
        reason_code=ground,
        rule=f"request_clock.refusal.{ground} ({cites})",
        policy_version=policy.version,
        at=at,
    )


def closed(
    staff: Staff,
    *,
    request_id: str,
    subject_ref: str,
    policy: Policy,
    at: datetime,
) -> dict[str, Any]:
    """The record of an access request answered: its report produced for the customer."""
    return _record(
        event_id=request_event_id(request_id, "closed"),
        kind=REQUEST_CLOSED,
        staff=staff,
        subject_ref=subject_ref,
        purpose=ACCESS,
        categories=(),
        decision="allow",
        reason_code=ALLOWED,
        rule=_clock_rule(policy.request_clock, "answer"),
        policy_version=policy.version,
        at=at,
    )


def revealed(
    staff: Staff,
    *,
    subject_ref: str,
    categories: Iterable[str],
    policy: Policy,
    at: datetime,
) -> dict[str, Any]:
    """The record of a customer's values (of ``categories``) shown to ``staff``."""
    role = policy.roles.get(PRIVACY_OFFICER)
    return _record(
        event_id=f"reveal/{uuid.uuid4()}",
        kind=VALUES_REVEALED,
        staff=staff,
        subject_ref=subject_ref,
        purpose=ACCESS,
        categories=categories,
        decision="allow",
        reason_code=ALLOWED,
        rule=f"roles.{PRIVACY_OFFICER}: {role.cites}" if role is not None else "roles",
        policy_version=policy.version,
        at=at,
    )


def refused_action(
    staff: Staff,
    *,
    kind: str,
    subject_ref: str,
    reason_code: str,
    detail: str,
    policy: Policy,
    at: datetime,
    purpose: str | None = None,
    categories: Iterable[str] = (),
) -> dict[str, Any]:
    """The record of an action of ``kind`` the console refused (``deny``, ``reason_code``
    ``role_not_authorized`` or ``extension_not_permitted``); ``detail`` says why, in the
    rule field (no personal data)."""
    if reason_code not in (ROLE_NOT_AUTHORIZED, EXTENSION_NOT_PERMITTED):
        raise ValueError(f"not a refusal of the console: {reason_code!r}")
    return _record(
        event_id=f"refused/{uuid.uuid4()}",
        kind=kind,
        staff=staff,
        subject_ref=subject_ref,
        purpose=purpose,
        categories=categories,
        decision="deny",
        reason_code=reason_code,
        rule=detail,
        policy_version=policy.version,
        at=at,
    )


def extension_refusal(
    clock: RequestClock | None,
    *,
    extensions_so_far: int,
    received: datetime,
    reason: str,
    at: datetime,
    is_closed: bool,
) -> str | None:
    """Why the policy does not allow this extension now (None: it does)."""
    if is_closed:
        return "the request is closed"
    if clock is None:
        return "the policy version states no request clock"
    extension = clock.extension
    if extension is None:
        return f"{clock.law} allows no extension"
    if extensions_so_far >= extension.times:
        times = "once" if extension.times == 1 else f"{extension.times} times"
        return f"the answer may be extended {times} only (request_clock.extension.times)"
    deadline = extension.notice_deadline(received)
    if at >= deadline:
        return (
            f"an extension must be recorded by {deadline.isoformat(timespec='minutes')} "
            "(request_clock.extension.notice_within)"
        )
    if reason not in extension.reasons:
        return f"{reason!r} is not one of the policy's reasons ({', '.join(extension.reasons)})"
    return None


class LedgerRecorder:
    """Publishes request and reveal records to ``privacy.decisions`` and waits for the broker
    to acknowledge them (``acks=all``): once :meth:`record` returns they are durable on the
    bus, and the ledger stage appends them exactly once (by event id)."""

    def __init__(self, client_config: Mapping[str, str], codec: Codec) -> None:
        self._outbox: Outbox | None = Outbox(dict(client_config))
        self._codec = codec

    def record(self, *records: Mapping[str, Any], timeout: float = 30.0) -> None:
        """Publish ``records``; raises :class:`~streams.exceptions.PublishError` when the
        broker does not acknowledge them within ``timeout`` seconds."""
        if self._outbox is None:
            raise PublishError("the ledger recorder is closed")
        for record in records:
            self._outbox.produce(
                DECISIONS,
                self._codec.encode("lifecycle.Decision", dict(record), DECISIONS),
                str(record["subject_ref"]).encode(),
            )
        self._outbox.flush_now(timeout)

    def close(self) -> None:
        """Let go of the producer (and its connections to the brokers)."""
        self._outbox = None


__all__ = [
    "ACCESS",
    "CONSOLE_ROLES",
    "ERASURE",
    "EXTENSION_NOT_PERMITTED",
    "PRIVACY_OFFICER",
    "RECORD_KINDS",
    "REQUEST_CLOSED",
    "REQUEST_EXTENDED",
    "REQUEST_FILED",
    "REQUEST_KINDS",
    "REQUEST_REFUSED",
    "VALUES_REVEALED",
    "LedgerRecorder",
    "RequestRef",
    "Staff",
    "closed",
    "extended",
    "extension_refusal",
    "filed",
    "new_request_id",
    "parse_request_event_id",
    "refused",
    "refused_action",
    "request_event_id",
    "revealed",
]
