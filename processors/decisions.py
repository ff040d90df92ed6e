"""The decision stage: every decoded event gets exactly one decision, in its subject's order.

Per-subject state (what was collected for which purposes, consent, what was erased) lives in a
Faust table keyed by ``subject_ref`` and co-partitioned with ``customer.events`` (the publisher
and the table both use murmur2 on the same key bytes), so the worker that owns a subject's events
owns its state, and a restarted worker recovers it from the changelog.

Exactly-once in effect: the table entry also remembers the decisions of the subject's most recent
events. An event processed again after a crash (its offset was not committed) gets its earlier
decision re-emitted rather than re-judged against state that already includes it and possibly
later events, so a restart changes no decision; the audit ledger drops the duplicate record.
A copy of an event published again at another offset (the same file published twice, or a
genuine record replayed by someone who can write to the bus) gets the decision the ledger holds
for it and changes nothing.

Before any of that, the event's source is checked (:mod:`processors.authentication`): an
event no registered source vouches for, or that its source may not send, is denied
(``source_unauthenticated``, ``source_not_authorized``) and changes nothing either.

Erasure runs here too, in order with the subject's other events: keys are shredded (retried
until the database confirms), vault copies released, a key-revocation record published, and
the erasure decision emitted; the ledger publishes the confirmation once that decision is durable.
An erasure destroys exactly the key versions of values before it in the customer's order (the
versions its request names, and those of allowed values decided before it): values after it,
even published before it was decided, stay readable. A refused collection destroys the key
versions its values name (carrying a held value that shares one over to a version of its own
first: see :meth:`DecisionStage._destroy_refused`). A collection whose value cannot be read
when it is decided (its key version ended, destroyed or unknown, or the value fails
authentication) is refused ``value_unreadable``. What an erasure destroys and leaves:
docs/erasure.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import faust
import orjson

from core.logging import get_logger
from core.retry import retry_call
from processors.authentication import Refusal, SourceCheck
from processors.erasure import (
    apply_erasure,
    end_versions,
    erasure_reach,
    expired,
    key_versions,
    mark_erased,
    plan_erasure,
    rekeyed,
)
from processors.intake import Decoded, Refused
from processors.metrics import Metrics
from processors.resources import Resources
from processors.rules import Verdict, apply, decide, refuse_unreadable
from processors.state import SubjectState
from schemas.kinds import RETENTION_SWEEP, judged_as
from sinks.entry import AuditEntry
from sinks.ledger import AuditLedger
from sinks.vault import HeldValue, Vault
from streams.envelope import decrypt_value, encrypt_value, opens
from streams.event_writer import DecisionWriter
from streams.exceptions import DecodeError, KeyShreddedError, KeyStoreError
from streams.keys import IDENTITY_CATEGORY, Versions
from streams.outbox import Outbox
from streams.partitioning import home_partition
from streams.revocations import revocation_record
from streams.topics import DECISIONS, KEY_REVOCATIONS, VIOLATIONS

log = get_logger(__name__)

RECENT = 16
"""At most this many decisions are remembered per subject for redelivered events; those whose
offset the group has committed are dropped first (they cannot be redelivered)."""

T = TypeVar("T")

SUBJECTS_TABLE = "subjects"
RETRY_FIRST, RETRY_MAX = 0.2, 5.0


@dataclass(slots=True)
class Entry:
    """A subject's table entry: its state plus the decisions of its events that may still be
    redelivered (event_id -> verdict, decided_at in ms, source offset, erasure)."""

    state: SubjectState
    recent: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: bytes | None) -> Entry:
        if not raw:
            return cls(SubjectState())
        data = orjson.loads(raw)
        return cls(SubjectState.from_dict(data["state"]), dict(data.get("recent", {})))

    def remember(self, record: dict[str, Any]) -> None:
        self.recent[record["event_id"]] = {
            "d": record["decision"],
            "r": record["reason_code"],
            "u": record["rule"],
            "v": record["policy_version"],
            "o": record["source_offset"],
            "t": int(record["decided_at"].timestamp() * 1000),
            "e": record["erasure"],
        }

    def recall(self, event: dict[str, Any], partition: int) -> dict[str, Any] | None:
        """The decision an event got before (None: never decided)."""
        seen = self.recent.get(event["event_id"])
        if seen is None:
            return None
        verdict = Verdict(seen["d"], seen["r"], seen["u"], seen["v"], ())
        decided_at = datetime.fromtimestamp(seen["t"] / 1000, UTC)
        return decision_record(
            event,
            verdict,
            partition=partition,
            offset=seen["o"],
            erasure=seen["e"],
            decided_at=decided_at,
        )

    def dump(self, committed: int | None = None) -> bytes:
        recent = self.recent
        if committed is not None:
            recent = {e: seen for e, seen in recent.items() if seen["o"] >= committed}
        if len(recent) > RECENT:
            recent = dict(list(recent.items())[-RECENT:])
        return orjson.dumps({"state": self.state.to_dict(), "recent": recent})


Unreadable = dict[int, dict[str, str]]
DESTROYED = "key version {version} was destroyed"
"""Why a value is unreadable when its key version is destroyed: an event before it in its
customer's order ended the version, or (deciding a batch again after a crash) one after it."""
"""Index in a batch -> category -> why its collected value cannot be read."""


def decision_record(
    event: dict[str, Any],
    verdict: Verdict,
    *,
    partition: int,
    offset: int,
    erasure: dict[str, Any] | None = None,
    decided_at: datetime | None = None,
) -> dict[str, Any]:
    """The ``lifecycle.Decision`` for an event and its verdict."""
    body, kind = event["body"], event["kind"]
    categories: list[str]
    if "data" in body:  # a collection: the categories of its values
        categories = [value["category"] for value in body["data"]]
    else:
        categories = list(body.get("categories") or [])
    return {
        "event_id": event["event_id"],
        "kind": kind,
        "subject_ref": event["subject_ref"],
        "source": event["source"],
        "categories": categories,
        "purpose": body.get("purpose"),
        "purposes": list(body.get("purposes") or []),
        "consent_granted": body.get("granted"),
        "recipient": body.get("recipient"),
        "actor_role": event["actor"]["role"],
        "decision": verdict.decision,
        "reason_code": verdict.reason_code,
        "rule": verdict.rule,
        "policy_version": verdict.policy_version,
        "occurred_at": event["occurred_at"],
        "decided_at": decided_at or datetime.now(UTC),
        "source_partition": partition,
        "source_offset": offset,
        "erasure": erasure,
    }


def sweep_record(
    event_id: str,
    subject_ref: str,
    source: str,
    actor_role: str | None,
    verdict: Verdict,
    as_of: datetime,
) -> dict[str, Any]:
    """The ``lifecycle.Decision`` of a retention sweep (one a subject swept, or the refusal of
    a request): no event of ``customer.events`` behind it, so no position."""
    return {
        "event_id": event_id,
        "kind": RETENTION_SWEEP,
        "subject_ref": subject_ref,
        "source": source,
        "categories": list(verdict.categories),
        "purpose": None,
        "purposes": [],
        "consent_granted": None,
        "recipient": None,
        "actor_role": actor_role,
        "decision": verdict.decision,
        "reason_code": verdict.reason_code,
        "rule": verdict.rule,
        "policy_version": verdict.policy_version,
        "occurred_at": as_of,
        "decided_at": datetime.now(UTC),
        "source_partition": -1,
        "source_offset": -1,
        "erasure": None,
    }


class DecisionStage:
    """Decides batches of decoded events (see module docstring)."""

    def __init__(
        self,
        app: faust.App,
        runtime: Resources,
        metrics: Metrics,
        outbox: Outbox,
        *,
        committed: Callable[[], Mapping[int, int]] = dict,
    ) -> None:
        self._app = app
        self._committed_offsets = committed
        """customer.events partition -> offset the group has committed (what a restart
        resumes from: decisions of events before it can never be needed again)."""
        self._outbox = outbox
        self._metrics = metrics
        self._runtime = runtime
        self.clock = runtime.clock
        """The time retention sweeps of this worker judge by (:mod:`processors.retention`)."""
        self._codec = runtime.codec
        self._decisions = DecisionWriter.for_codec(self._codec, DECISIONS)
        self._book = runtime.policy
        self._keys = runtime.keystore
        self._vault = Vault(runtime.engine)
        self._ledger = AuditLedger(runtime.engine)  # looked up by event_id before deciding
        self.table = app.Table(
            SUBJECTS_TABLE,
            default=None,
            partitions=runtime.settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            use_partitioner=True,
        )
        """subject_ref (bytes) -> JSON of its :class:`Entry` (bytes); written only through
        :meth:`_store`."""
        self._changelog: str = self.table.changelog_topic.get_topic_name()
        registry = runtime.sources
        self.sources = SourceCheck(
            lambda: self._until_done("sources.read", registry.snapshot),
            clock=runtime.clock,
            mode=runtime.settings.auth_mode,
            on_permitted=metrics.unauthenticated_permitted,
        )
        """Who may send what (:mod:`processors.authentication`), checked before deciding."""
        self.lock = asyncio.Lock()
        """Held while a batch (or a retention sweep) reads and writes subjects' entries."""

    # -- the subjects' entries --------------------------------------------------------

    def _store(self, key: bytes, value: bytes, partition: int) -> None:
        """Write a subject's entry: its changelog record into the outbox, then the table.

        The changelog record goes out with the batch's decisions, so the outbox's flush,
        which every offset commit waits for, covers it too: an offset is never committed
        while the state its events made is unacknowledged. Faust's own ``table[key] =``
        sends the record later, through its producer's buffer, and nothing a commit waits
        for tracks that send. The table's in-memory store is written directly, so Faust
        sends no second record; recovery reads these records like its own.
        ``partition`` is the subject's home partition, the changelog's co-partition."""
        self._outbox.produce(self._changelog, value, key, partition=partition)
        store = self.table.data
        store[key] = value
        # the memory store drops a key from its data when the key's partition is revoked
        owners = getattr(store, "_key_partition", None)
        if owners is not None:
            owners[key] = partition

    # -- the batch ----------------------------------------------------------------------

    async def handle(self, batch: Sequence[Decoded]) -> Refused:
        """Decide ``batch``; the events refused instead (an ``event_id`` the audit ledger
        already holds for another event), for the caller to dead-letter."""
        refused, repeats = self._reused_ids(batch)
        self.sources.new_batch()
        unreadable = self._until_done("keys.read", lambda: self._unreadable(batch, refused))
        async with self.lock:
            entries: dict[str, Entry] = {}
            partition_of: dict[str, int] = {}
            held: dict[tuple[str, str], HeldValue] = {}
            for index, item in enumerate(batch):
                if index in refused:
                    continue
                event = item.record
                ref = event["subject_ref"]
                entry = entries.get(ref)
                if entry is None:
                    entry = entries[ref] = Entry.load(self.table.get(ref.encode()))
                    partition_of[ref] = item.partition
                record = await self._decide_one(
                    item, entry, held, unreadable.get(index, {}), repeats.get(index)
                )
                if judged_as(record["kind"]) == "erasure":
                    self._metrics.erasure_decided(
                        (record["erasure"] or {}).get("status", "refused"),
                        item.record["published_at"],
                        record["decided_at"],
                    )
                self._emit(record)
            values = list(held.values())
            if values:
                self._until_done("vault.hold", lambda: self._vault.hold(values))
            committed = self._committed_offsets()
            for ref, entry in entries.items():
                partition = partition_of[ref]
                self._store(ref.encode(), entry.dump(committed.get(partition)), partition)
        return [(batch[index], reason) for index, reason in sorted(refused.items())]

    def _reused_ids(self, batch: Sequence[Decoded]) -> tuple[dict[int, str], dict[int, AuditEntry]]:
        """Index -> reason, for events whose ``event_id`` names another event: already in the
        audit ledger with another subject or kind, or earlier in this batch. Deciding one
        would change state (or shred keys) under a decision the ledger then drops as a
        repeat. Two such events decided before the first reaches the ledger are not caught
        here (see docs/ on guarantees and limits).

        And index -> the ledger's entry, for events the ledger already holds from another
        position of ``customer.events``: a copy published again (a replay of a genuine,
        signed record, or the same file published twice), not a batch redone after a crash
        (that one is at the position the ledger names, and is decided again so that its
        state is rebuilt). A copy gets its first decision again and changes nothing: a
        replayed erasure must not shred what the customer gave since, a replayed consent
        change must not undo a later one."""
        ids = list({item.record["event_id"] for item in batch})
        recorded = self._until_done("ledger.lookup", lambda: self._ledger.recorded_events(ids))
        seen: dict[str, tuple[str, str]] = {}
        refused: dict[int, str] = {}
        repeats: dict[int, AuditEntry] = {}
        for index, item in enumerate(batch):
            event = item.record
            identity = (event["subject_ref"], event["kind"])
            event_id = event["event_id"]
            earlier = recorded.get(event_id)
            if earlier is not None and (earlier.subject_ref, earlier.kind) != identity:
                refused[index] = (
                    f"event_id is already recorded for another event (audit seq {earlier.seq})"
                )
            elif seen.setdefault(event_id, identity) != identity:
                refused[index] = "event_id is used by another event earlier in its batch"
            elif earlier is not None and earlier.source_position != (item.partition, item.offset):
                repeats[index] = earlier
        return refused, repeats

    def _unreadable(self, batch: Sequence[Decoded], skipped: Mapping[int, str]) -> Unreadable:
        """The collected values of ``batch`` that no live key of the store opens now: their
        version was destroyed or never made by this store, or the value fails authentication
        under it. (A version an earlier event of the batch ends is found while deciding.)
        One query to the key store for the whole batch."""
        wanted: list[tuple[str, str, int]] = []
        for index, item in enumerate(batch):
            if index in skipped or judged_as(item.record["kind"]) != "collection":
                continue
            ref = item.record["subject_ref"]
            wanted += [
                (ref, value["category"], value["key_version"])
                for value in item.record["body"]["data"]
                if value["key_version"] > 0
            ]
        if not wanted:
            return {}
        keys = self._keys.decryption_keys(wanted)
        made = self._keys.made_versions(ref for ref in wanted if ref not in keys)
        out: Unreadable = {}
        for index, item in enumerate(batch):
            event = item.record
            if index in skipped or judged_as(event["kind"]) != "collection":
                continue
            ref = event["subject_ref"]
            for value in event["body"]["data"]:
                category, version = value["category"], value["key_version"]
                if version < 1:
                    continue
                key = keys.get((ref, category, version))
                if key is None and (ref, category, version) in made:
                    why = DESTROYED.format(version=version)
                elif key is None:
                    why = f"key version {version} was never made by this key store"
                elif not opens(key, event["event_id"], ref, value):
                    why = f"the value fails authentication under key version {version}"
                else:
                    continue
                out.setdefault(index, {})[category] = why
        return out

    async def _decide_one(
        self,
        item: Decoded,
        entry: Entry,
        held: dict[tuple[str, str], HeldValue],
        unreadable: Mapping[str, str],
        repeat: AuditEntry | None = None,
    ) -> dict[str, Any]:
        event = item.record
        seen = entry.recall(event, item.partition)
        if seen is not None:  # processed before a crash: the same decision again
            return seen
        if repeat is not None:  # published again: its first decision, and nothing changes
            first = repeat.decision()
            verdict = Verdict(
                first["decision"], first["reason_code"], first["rule"], first["policy_version"], ()
            )
            record = decision_record(
                event,
                verdict,
                partition=item.partition,
                offset=item.offset,
                erasure=first["erasure"],
            )
            entry.remember(record)
            log.info("decision.repeated", event_id=event["event_id"], audit_seq=repeat.seq)
            return record
        refusal = self.sources.check_event(event, item.value)
        if refusal is not None:  # nobody vouches for it: denied, and nothing changes
            verdict = self.refusal_verdict(refusal, event["occurred_at"], event)
            record = decision_record(event, verdict, partition=item.partition, offset=item.offset)
            entry.remember(record)
            return record
        verdict = decide(event, entry.state, self._book)
        judged = judged_as(event["kind"])
        if judged == "collection" and verdict.allowed:
            cannot = dict(unreadable)
            for value in event["body"]["data"]:
                category, version = value["category"], value["key_version"]
                if version < 1:
                    continue
                if entry.state.versions(category).is_ended(version):
                    cannot[category] = DESTROYED.format(version=version)
                elif cannot.get(category) == DESTROYED.format(version=version):
                    # destroyed by an event after this one in the customer's order (this
                    # batch is decided again after a crash): readable where it stands
                    del cannot[category]
            if cannot:
                verdict = refuse_unreadable(verdict, cannot, self._book)
        erasure = None
        if judged == "erasure" and verdict.decision == "allow":
            erasure = await self._erase(event, entry, held)
        else:
            entry.state = apply(event, verdict, entry.state)
        if judged == "collection":
            if verdict.decision == "allow":
                self._hold(event, held)
            else:
                self._destroy_refused(event, entry, held, verdict.reason_code, unreadable)
        record = decision_record(
            event, verdict, partition=item.partition, offset=item.offset, erasure=erasure
        )
        entry.remember(record)
        return record

    def _hold(self, event: dict[str, Any], held: dict[tuple[str, str], HeldValue]) -> None:
        body, ref = event["body"], event["subject_ref"]
        for value in body["data"]:
            if value["key_version"] <= 0:
                continue  # withheld by the publisher: never stored
            held[(ref, value["category"])] = HeldValue(
                ref,
                value["category"],
                event["event_id"],
                value["key_version"],
                value["nonce"],
                value["ciphertext"],
                event["occurred_at"],
                body["channel"],
                tuple(body["purposes"]),
            )

    def _destroy_refused(
        self,
        event: dict[str, Any],
        entry: Entry,
        held: dict[tuple[str, str], HeldValue],
        reason: str,
        unreadable: Mapping[str, str],
    ) -> None:
        """A refused collection keeps nothing: destroy the key versions its values name.

        The publisher encrypted each value before anyone decided, so the ciphertext is on
        ``customer.events`` already; only destroying its key makes it unreadable. Our
        publisher gives a collection the policy refuses versions of its own
        (:meth:`~streams.keys.KeyStore.isolated_keys`), so destroying them costs nothing
        else. A version the publisher did not set apart (another producer, a policy file the
        publisher did not have) may be shared:

        * with values of allowed collections that come later, still in flight: they are
          refused ``value_unreadable`` when decided (the version is ended in the state);
        * with the value the customer holds of that category (the vault's, or one this batch
          is about to store): that value is first decrypted, re-encrypted under a version of
          its own (same event id, so the same associated data) and written to the vault; only
          then is the version destroyed. A crash in between leaves both copies; the batch is
          decided again and does the same. Copies of earlier allowed values on the topic
          under the destroyed version become unreadable, as the refused one does.

        A value no key opens already (``unreadable``: its version destroyed or unknown, or it
        fails authentication) needs nothing destroyed: its version is left alone, even when
        it is live (altered bytes under a current key).
        """
        ref = event["subject_ref"]
        state = entry.state
        doomed: dict[str, set[int]] = {}
        for value in event["body"]["data"]:
            category, version = value["category"], value["key_version"]
            readable = category not in unreadable and not state.versions(category).is_ended(version)
            if version > 0 and readable:
                doomed.setdefault(category, set()).add(version)
        if not doomed:
            return  # withheld by the publisher, or no key opens any of it
        sharing = []
        for category, versions in doomed.items():
            current = held.get((ref, category))
            version = (
                current.key_version
                if current is not None
                else getattr(state.collected.get(category), "key_version", 0)
            )
            if version in versions:
                sharing.append(category)
        kept = self._carried_over(ref, sharing, held)
        if kept:
            moved = self._until_done(
                "keys.isolate", lambda: self._reencrypt(ref, kept), subject_ref=ref
            )
            self._until_done("vault.hold", lambda: self._vault.hold(moved), subject_ref=ref)
            for value in moved:
                if (ref, value.category) in held:
                    held[(ref, value.category)] = value
            entry.state = rekeyed(entry.state, {v.category: v.key_version for v in moved})
        lost = sorted(set(sharing) - set(kept))
        if lost:  # it decrypted when it was allowed: its key was destroyed by other means
            log.error("collection.held_value_unreadable", subject_ref=ref, categories=lost)
        selection = {c: Versions(exactly=frozenset(v)) for c, v in doomed.items()}
        self._until_done(
            "keys.shred",
            lambda: self._keys.shred_versions(ref, selection, reason),
            subject_ref=ref,
        )
        entry.state = end_versions(entry.state, {}, doomed)
        self._revoke(ref, selection)
        log.info(
            "collection.refused_keys_destroyed",
            event_id=event["event_id"],
            subject_ref=ref,
            categories=sorted(doomed),
            rekeyed=sorted(kept),
        )

    def _carried_over(
        self, ref: str, categories: list[str], held: dict[tuple[str, str], HeldValue]
    ) -> dict[str, tuple[HeldValue, str]]:
        """category -> (held value, its plaintext), for the held values of ``categories``
        that still decrypt (this batch's newer value first, else the vault's)."""
        if not categories:
            return {}
        stored = {
            value.category: value
            for value in self._until_done("vault.read", lambda: self._vault.held(ref))
        }

        def open_all() -> dict[str, tuple[HeldValue, str]]:
            out: dict[str, tuple[HeldValue, str]] = {}
            for category in categories:
                value = held.get((ref, category)) or stored.get(category)
                if value is None:
                    continue
                try:
                    plain = decrypt_value(self._keys, value.event_id, ref, value.encrypted_value())
                except (KeyShreddedError, DecodeError):
                    continue  # unreadable already: nothing to carry over
                out[category] = (value, plain)
            return out

        return self._until_done("keys.read", open_all, subject_ref=ref)

    def _reencrypt(self, ref: str, kept: Mapping[str, tuple[HeldValue, str]]) -> list[HeldValue]:
        """``kept``'s values encrypted under key versions of their own (no value in flight
        shares them, so an erasure after this destroys nothing that comes after it)."""
        keys = self._keys.isolated_keys((ref, category) for category in kept)
        out: list[HeldValue] = []
        for category, (value, plain) in kept.items():
            sealed = encrypt_value(keys[(ref, category)], value.event_id, plain)
            out.append(
                replace(
                    value,
                    key_version=sealed["key_version"],
                    nonce=sealed["nonce"],
                    ciphertext=sealed["ciphertext"],
                )
            )
        return out

    def _emit(self, record: dict[str, Any]) -> None:
        """Into the outbox: the decision, and a refusal for the privacy team too."""
        self._metrics.decided(record["decision"], record["reason_code"])
        key = record["subject_ref"].encode()
        writer = self._decisions  # its bytes name no topic: one value serves both
        value = (
            writer.encode(record)
            if writer is not None
            else self._codec.encode("lifecycle.Decision", record, DECISIONS)
        )
        if record["decision"] == "deny":
            violation = (
                value
                if writer is not None
                else self._codec.encode("lifecycle.Decision", record, VIOLATIONS)
            )
            self._outbox.produce(VIOLATIONS, violation, key)
            log.info(
                "decision.deny",
                event_id=record["event_id"],
                reason=record["reason_code"],
                subject_ref=record["subject_ref"],
            )
        self._outbox.produce(DECISIONS, value, key)

    # -- erasure ------------------------------------------------------------------------

    async def _erase(
        self,
        event: dict[str, Any],
        entry: Entry,
        held: dict[tuple[str, str], HeldValue],
    ) -> dict[str, Any]:
        """Shred what the request covers: every category held, and every category with a
        live key version in the request's reach although nothing of it is held (a refused
        collection's ciphertext travelled on ``customer.events`` all the same); keep only
        held categories the law requires kept. When nothing stays held, the ``subject_id``
        key goes too.

        The request's reach in each category (:func:`~processors.erasure.erasure_reach`):
        the versions it names as ended (its publisher started newer ones before sending it),
        every version when it names none, and every version an allowed value was decided
        under before it. Versions after it, of values published before it was decided but
        after it in the customer's order, are not touched."""
        ref, body = event["subject_ref"], event["body"]
        at = event["occurred_at"]
        named: Mapping[str, int] = body.get("key_versions_ended") or {}
        state = entry.state
        reach = erasure_reach(
            state,
            named,
            self._until_done("keys.live", lambda: self._keys.keys_of(ref), subject_ref=ref),
        )
        plan = plan_erasure(
            state, body.get("categories"), self._book.in_force(at), at, keyed=list(reach.keyed)
        )
        entry.state = apply_erasure(state, plan, at)
        selection = {c: reach.versions[c] for c in plan.shred}
        if not entry.state.collected:  # nothing kept: subject_id itself goes too
            selection[IDENTITY_CATEGORY] = reach.versions[IDENTITY_CATEGORY]
        await self.shred(ref, selection, "subject_erased")
        entry.state = end_versions(
            entry.state,
            {c: v.through for c, v in selection.items()},
            {c: v.exactly for c, v in selection.items()},
        )
        for category in plan.shred:
            held.pop((ref, category), None)
        log.info(
            "erasure.done",
            request_id=body["request_id"],
            subject_ref=ref,
            shredded=len(plan.shred),
            retained=len(plan.retained),
        )
        answered = sorted({*plan.shred, *plan.already_erased})
        return {
            "request_id": body["request_id"],
            "status": "completed" if answered or plan.retained else "nothing_held",
            "shredded": answered,
            "retained": plan.retained_records(),
        }

    async def shred(
        self, subject_ref: str, selection: Mapping[str, Versions], reason: str
    ) -> dict[str, list[int]]:
        """Destroy the key versions ``selection`` names (retrying until the key store
        confirms), release the vault copies of those categories, then tell every process to
        drop those keys from its cache; the versions this call destroyed.

        The revocation names every version asked for, whatever the key store answered: when
        the vault release fails after the destruction committed, the retry finds nothing left
        to destroy, yet other processes may still cache the keys (and a revocation of a key
        already gone costs a cache miss, nothing more)."""
        if not selection:
            return {}

        def destroy() -> dict[str, list[int]]:
            destroyed = self._keys.shred_versions(subject_ref, selection, reason)
            self._vault.release(subject_ref, [c for c in selection if c != IDENTITY_CATEGORY])
            return destroyed

        destroyed = self._until_done("shred", destroy, subject_ref=subject_ref)
        self._revoke(subject_ref, selection)
        return destroyed

    def _until_done(self, what: str, work: Callable[[], T], **context: str) -> T:
        """``work()``, retried with backoff while the database is unavailable.

        It blocks the event loop on purpose, retries included: a rebalance's callbacks run on
        that loop, so partitions cannot move while a batch is half decided (the consumer's own
        thread keeps the group's heartbeats going). Awaiting here instead would let a worker
        that joined during a database outage take partitions mid-batch; Faust would then
        re-fetch them behind events already read, and the group would stall."""

        def notice(exc: BaseException, wait: float) -> None:
            # a database error's text quotes its parameters: only its type is logged
            error = str(exc) if isinstance(exc, KeyStoreError) else type(exc).__name__
            log.error(f"{what}.retrying", error=error, in_seconds=wait, **context)

        return retry_call(work, on=Exception, first=RETRY_FIRST, most=RETRY_MAX, notice=notice)

    def _revoke(self, subject_ref: str, destroyed: Mapping[str, Versions]) -> None:
        record = revocation_record(subject_ref, destroyed, destroyed=destroyed)
        value = self._codec.encode("lifecycle.KeyRevocation", record, KEY_REVOCATIONS)
        self._outbox.produce(KEY_REVOCATIONS, value, subject_ref.encode())

    # -- retention ----------------------------------------------------------------------

    async def sweep(
        self, as_of: datetime, sweep_id: str, partitions: set[int] | None = None
    ) -> int:
        """Shred every category whose retention ran out by ``as_of``, for the subjects this
        worker holds (of ``partitions``, when given); the number of subjects swept."""
        count = self._runtime.settings.topic_partitions
        swept = 0
        async with self.lock:
            for key, raw in list(self.table.items()):
                if partitions is not None and home_partition(key, count) not in partitions:
                    continue
                ref = key.decode()
                entry = Entry.load(raw)
                due = expired(entry.state, self._book, as_of)
                if not due:
                    continue
                entry.state = mark_erased(entry.state, due, "retention_expired", as_of)
                gone = list(due)
                if not entry.state.collected:
                    gone.append(IDENTITY_CATEGORY)  # nothing held any more: nor who it was
                newest, _live = key_versions(
                    self._until_done("keys.live", partial(self._keys.keys_of, ref))
                )
                # not an event of the customer's: every version there is now
                selection = {c: Versions(newest.get(c, 0)) for c in gone}
                await self.shred(ref, selection, "retention_expired")
                entry.state = end_versions(
                    entry.state, {c: v.through for c, v in selection.items()}, {}
                )
                self._metrics.retention_shredded(len(due))
                self._store(key, entry.dump(), home_partition(key, count))
                verdict = Verdict(
                    "allow",
                    "retention_expired",
                    "retention period ran out (RETENTION OF DATA)",
                    self._book.in_force(as_of).version,
                    tuple(sorted(due)),
                )
                erasure = {
                    "request_id": sweep_id,
                    "status": "completed",
                    "shredded": sorted(due),
                    "retained": [],
                }
                record = sweep_record(
                    f"{sweep_id}/{ref}", ref, "retention", "system", verdict, as_of
                )
                record["erasure"] = erasure
                self._emit(record)
                swept += 1
            await self._outbox.flush()
        return swept

    # -- sources ------------------------------------------------------------------------

    def refusal_verdict(
        self, refusal: Refusal, at: datetime, event: Mapping[str, Any] | None = None
    ) -> Verdict:
        """The denial of a request its source may not make, under the policy in force ``at``."""
        body = {} if event is None else event["body"]
        categories = [v["category"] for v in body.get("data") or []] or body.get("categories")
        return Verdict(
            "deny",
            refusal.reason_code,
            refusal.rule,
            self._book.in_force(at).version,
            tuple(categories or ()),
        )

    async def refuse_sweep(
        self, request: Mapping[str, Any], partition: int, refusal: Refusal
    ) -> None:
        """Record a retention sweep request refused for its source (nothing is swept)."""
        verdict = self.refusal_verdict(refusal, request["as_of"])
        event_id = f"{request['sweep_id']}/{partition}"
        record = sweep_record(event_id, "", refusal.source, None, verdict, request["as_of"])
        self._emit(record)
        await self._outbox.flush()
