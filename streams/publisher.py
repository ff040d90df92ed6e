"""The publisher upstream systems use: validate, encrypt, encode, produce, confirm delivery.

Nothing plaintext leaves it: ``data`` values are encrypted field by field with the subject's
data keys, ``subject_id`` is encrypted under the subject's identity key, and the record key is
``subject_ref`` (so one subject's events stay in order on one partition).

Every record is authenticated by the source it names (``source``): the publisher holds that
source's secret (:class:`~streams.sourceauth.SourceCredentials`, usually read from
``LIFECYCLE_SOURCE_SECRET_FILE``) and appends a MAC over the record
(:func:`streams.sourceauth.seal`). A line naming a source the publisher holds no secret for is
refused. A publisher given no credentials at all sends records without a MAC, which workers
refuse unless they run with ``LIFECYCLE_AUTH_MODE=permit`` (a rollout).

Several processes can publish one file (:class:`Share`, :func:`plan_shares`): each reads
every line and publishes those of its customers, so a customer's events still come from one
producer, in order.

Lines are handled in chunks: one key-store round trip fetches (or creates) every data key a
chunk needs, then each event is encrypted, Avro-encoded and handed to an idempotent
confluent-kafka producer (``acks=all``). :meth:`Publisher.flush` waits for every delivery report
and raises :class:`~streams.exceptions.PublishError` if the broker refused any record.

Keys follow each customer's order of events (docs/erasure.md):

* Before a chunk is encrypted, the key-revocation listener has applied every revocation and
  rotation published before the chunk began, so no value is encrypted under a version another
  publisher ended or destroyed before then.
* An erasure request ends the current key versions of the categories it covers (every
  category, and ``subject_id``, when it names none) before it is sent: the store reserves the
  next version number, every process drops the ended versions from its cache (a ``rotated``
  record on ``privacy.key-revocations``, acknowledged before the request is produced), and the
  request names the versions it ends (``key_versions_ended``). Values before it in the
  customer's order are under those versions or older; values after it, under newer ones.
* A collection the policy refuses (a stateless check: see :class:`CollectionScreen`) is
  encrypted under versions of its own (:meth:`~streams.keys.KeyStore.isolated_keys`), so the
  worker destroys exactly those and nothing another value needs.
"""

from __future__ import annotations

import functools
import itertools
import re
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message

from core.logging import get_logger
from schemas.kinds import DELETION_REQUESTED, KINDS
from streams import clients
from streams.clients import DELIVERY_TIMEOUT_MS
from streams.codec import Codec
from streams.envelope import ValueSealer
from streams.event_writer import CustomerEventWriter
from streams.events import InputEvent, Vocabulary, read_line, shown_name, validate
from streams.exceptions import KeyStoreError, PublishError, ValidationError
from streams.keys import IDENTITY_CATEGORY, DataKey, KeyStore
from streams.revocations import RevocationListener, revocation_record
from streams.sourceauth import SourceCredential, SourceCredentials, seal
from streams.topic_admin import ensure_topic
from streams.topics import CUSTOMER_EVENTS, KEY_REVOCATIONS

log = get_logger(__name__)

CHUNK = 2_000
WITHHELD_KEY_VERSION = 0
"""``key_version`` of a value the policy forbade collecting: no key, no ciphertext."""


REVOCATIONS_WAIT = 10.0
"""Seconds a chunk waits for the revocation listener to catch up before the publisher drops
every cached key instead (the store then says what is current: slower, never wrong)."""


class CollectionScreen(Protocol):
    """Says, before a collection is published, whether the worker will refuse it.

    A collection's decision depends only on the policy in force at its ``occurred_at``, its
    channel, purposes, categories and the actor's role, never on the customer's history, so
    the publisher can tell (``processors.rules.RefusalScreen`` asks the decision engine)."""

    def refuses(self, event: InputEvent) -> bool: ...


@dataclass(slots=True)
class LineError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass(slots=True)
class PublishReport:
    published: int = 0
    errors: list[LineError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class Share:
    """One of ``jobs`` processes publishing the same lines: it publishes the customers that
    fall to ``index``, so each customer's events are produced by one process, in their order.

    A customer is known by the CRC-32 of its ``subject_id`` (:func:`customer_key`, the same in
    every process): ``placed`` names the share of the busiest customers (a plan balanced over
    the file, :func:`plan_shares`), and any other falls to its key modulo ``jobs``. A line
    without a readable ``subject_id`` (which the publisher refuses) falls to a share by its
    line number, so it is reported once. ``by_line``, when the plan gives it, is the share of
    each line so placed (a byte a line, by line number), so a share passes over the others'
    lines without reading them; a line past its end is placed by its key. Only keys and
    share numbers travel to a process, never a name."""

    index: int
    jobs: int
    placed: Mapping[int, int] = field(default_factory=dict)
    by_line: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.jobs:
            raise ValueError(f"share {self.index} of {self.jobs} jobs")

    def owner(self, key: int) -> int:
        """The share that publishes the customer whose key is ``key``."""
        placed = self.placed.get(key)
        return key % self.jobs if placed is None else placed

    def holds(self, lineno: int, value: Any) -> bool:
        """Whether line ``lineno`` (its decoded JSON value, or why it could not be read)
        falls to this share."""
        subject_id = value.get("subject_id") if isinstance(value, dict) else None
        if isinstance(subject_id, str):
            return self.owner(customer_key(subject_id)) == self.index
        return (lineno - 1) % self.jobs == self.index


def customer_key(subject_id: str | bytes) -> int:
    """The CRC-32 of a ``subject_id`` (text, or its UTF-8 bytes): the same in every process
    (not Python's salted ``hash``)."""
    if isinstance(subject_id, str):
        subject_id = subject_id.encode(errors="surrogatepass")
    return zlib.crc32(subject_id)


def share_of(subject_id: str | bytes, jobs: int) -> int:
    """The share of a customer without a plan: its key modulo ``jobs``."""
    return customer_key(subject_id) % jobs


PLACED_MOST = 4_096
"""The busiest customers a plan places itself; the others fall to their key modulo the jobs."""


def plan_shares(lines: Iterable[str | bytes], jobs: int) -> list[Share]:
    """The ``jobs`` shares of ``lines``, balanced: traffic is skewed (a few customers send
    much of it), so the busiest customers are placed one by one, each on the share with the
    fewest lines so far, after the others have fallen to their key modulo ``jobs``. Each
    share is told where every line falls (``by_line``), up to 256 shares."""
    keys = array("q")  # each line's customer key; -1: none (placed by line number)
    counts: dict[int, int] = {}
    for line in lines:
        key = _line_key(line) if line.strip() else None
        keys.append(-1 if key is None else key)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    busiest = sorted(counts, key=lambda k: (-counts[k], k))[:PLACED_MOST]
    loads = [0] * jobs
    for key, count in counts.items():
        loads[key % jobs] += count
    for key in busiest:
        loads[key % jobs] -= counts[key]
    placed: dict[int, int] = {}
    for key in busiest:
        least = min(range(jobs), key=lambda index: (loads[index], index))
        placed[key] = least
        loads[least] += counts[key]
    by_line = None
    if jobs <= 256:
        plan = Share(0, jobs, placed)
        by_line = bytes(
            plan.owner(key) if key >= 0 else number % jobs for number, key in enumerate(keys)
        )
    return [Share(index, jobs, placed, by_line) for index in range(jobs)]


_SUBJECT_KEY = re.compile(rb'"subject_id"\s*:')
_PLAIN_TEXT = re.compile(rb'\s*"([^"\\]*)"')


def _plain_subject(line: str | bytes) -> bytes | None:
    """The ``subject_id`` of a line, without decoding it, when the line holds no escape at
    all and names ``subject_id`` once, followed by a string; else None (the line must be
    decoded). Without escapes every key is written as it is and no string holds a quote, so
    a valid event's own ``subject_id`` is that one match (a line whose only match is nested
    names no ``subject_id`` of its own, and is refused wherever it falls)."""
    if not isinstance(line, bytes) or b"\\" in line:
        return None
    keys = list(itertools.islice(_SUBJECT_KEY.finditer(line), 2))
    if len(keys) != 1:
        return None
    value = _PLAIN_TEXT.match(line, keys[0].end())
    return None if value is None else value.group(1)


def _line_key(line: str | bytes) -> int | None:
    """The customer key of a line as every share places it (None: placed by line number)."""
    subject = _plain_subject(line)
    if subject is not None:
        return customer_key(subject)
    try:
        value = read_line(line)
    except ValidationError:
        return None
    subject_id = value.get("subject_id") if isinstance(value, dict) else None
    return customer_key(subject_id) if isinstance(subject_id, str) else None


def _owned_lines(
    numbered: Iterable[tuple[int, str | bytes]], share: Share | None
) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value or the ValidationError saying why the line cannot be read) of
    each non-blank line ``share`` holds (every one without a share). A line the plan placed
    (``by_line``) is read only by its share; past the plan, a line that names its customer
    plainly is placed without being decoded, and any other is decoded first, then placed
    (:meth:`Share.holds`). Every process places every line the same way."""
    by_line = b"" if share is None or share.by_line is None else share.by_line
    planned = len(by_line)
    for lineno, line in numbered:
        if not line.strip():
            continue
        mine = share is None
        if share is not None:
            if lineno <= planned:  # placed by the plan
                if by_line[lineno - 1] != share.index:
                    continue  # another share's line, not even read
                mine = True
            else:
                subject = _plain_subject(line)
                if subject is not None:
                    if share.owner(customer_key(subject)) != share.index:
                        continue  # another share's customer, not even decoded
                    mine = True
        value: Any
        try:
            value = read_line(line)
        except ValidationError as exc:
            value = exc
        if mine or (share is not None and share.holds(lineno, value)):
            yield lineno, value


class Publisher:
    """Publishes customer-data events onto ``customer.events``."""

    def __init__(
        self,
        client_config: dict[str, str],
        keystore: KeyStore,
        codec: Codec,
        vocabulary: Vocabulary,
        *,
        topic: str = CUSTOMER_EVENTS,
        listen_for_revocations: bool = True,
        delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS,
        credentials: SourceCredentials | None = None,
        screen: CollectionScreen | None = None,
    ) -> None:
        self._producer = clients.producer(client_config, delivery_timeout_ms=delivery_timeout_ms)
        self._flush_timeout = delivery_timeout_ms / 1000 + 10
        self._client_config = client_config
        self._revocations_topic_checked = False
        self._revocations: RevocationListener | None = None
        if listen_for_revocations:  # never encrypt under a key another process shredded
            self._revocations = RevocationListener(client_config, codec, keystore).start()
        self._keys = keystore
        self._codec = codec
        writer = CustomerEventWriter.for_codec(codec, topic)
        self._encode: Callable[[dict[str, Any]], bytes] = (
            writer.encode
            if writer is not None
            else functools.partial(codec.encode, "lifecycle.CustomerEvent", topic=topic)
        )
        self._vocabulary = vocabulary
        self._topic = topic
        self._screen = screen
        """None: every collection is encrypted under the current keys (a refused one then
        costs the worker a rotation when the customer holds a value of its category)."""
        self._failed: list[str] = []
        self._delivered = 0
        self._credentials = credentials
        if credentials is None:
            log.warning(
                "publisher.unauthenticated",
                hint="no source secret (LIFECYCLE_SOURCE_SECRET_FILE): workers refuse these "
                "events unless LIFECYCLE_AUTH_MODE=permit",
            )

    # -- one event -------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> str:
        """Validate and publish one event given as a dict of the input format; its event_id."""
        valid = validate(event, self._vocabulary)
        if self._credentials is not None:
            self._credentials.refresh()
            self._credential(valid)  # raises ValidationError naming the source
        self._send_chunk([valid])
        return valid.event_id

    def _credential(self, event: InputEvent) -> SourceCredential | None:
        """The credential ``event`` is signed with (None: the publisher signs nothing)."""
        if self._credentials is None:
            return None
        credential = self._credentials.get(event.source)
        if credential is None:
            held = ", ".join(self._credentials.names)
            raise ValidationError(
                "source",
                f"this publisher holds no secret for source {shown_name(event.source)} "
                f"(it holds: {held}); each source publishes with its own secret",
            )
        return credential

    # -- many lines ------------------------------------------------------------------------

    def publish_lines(
        self,
        lines: Iterable[str | bytes],
        *,
        flush: bool = True,
        share: Share | None = None,
    ) -> PublishReport:
        """Publish JSON lines; invalid ones are reported (line number, field) and skipped.
        With ``share``, only the lines that share holds (see :class:`Share`); line numbers
        are still those of ``lines``."""
        report = PublishReport()
        owned = _owned_lines(enumerate(lines, start=1), share)
        vocabulary = self._vocabulary
        while chunk := list(itertools.islice(owned, CHUNK)):
            valid: list[InputEvent] = []
            now = datetime.now(UTC)
            if self._credentials is not None:
                self._credentials.refresh()
            for lineno, value in chunk:
                try:
                    if isinstance(value, ValidationError):
                        raise value
                    event = validate(value, vocabulary, now=now)
                    self._credential(event)
                    valid.append(event)
                except ValidationError as exc:
                    report.errors.append(LineError(lineno, exc.field, exc.message))
            self._send_chunk(valid)
            report.published += len(valid)
        if flush:
            self.flush()
        return report

    def _send_chunk(self, events: list[InputEvent]) -> None:
        if not events:
            return
        self._catch_up_with_revocations()
        subject_ref = self._keys.subject_ref
        refs = {subject: subject_ref(subject) for subject in {e.subject_id for e in events}}
        start = 0
        for index, event in enumerate(events):
            if event.kind == DELETION_REQUESTED:  # keys change after it: a segment ends
                self._send_segment(events[start : index + 1], refs)
                start = index + 1
        self._send_segment(events[start:], refs)

    def _catch_up_with_revocations(self) -> None:
        if self._revocations is None:
            return
        try:
            self._revocations.caught_up(REVOCATIONS_WAIT)
        except KeyStoreError as exc:
            log.warning("revocations.behind", error=str(exc), cached_keys="dropped")
            self._keys.forget_all()

    def _send_segment(self, events: list[InputEvent], refs: dict[str, str]) -> None:
        """Encrypt and produce ``events``: none is an erasure request but maybe the last."""
        if not events:
            return
        screen = self._screen
        refused = (
            set()
            if screen is None
            else {
                index
                for index, event in enumerate(events)
                if KINDS[event.kind].carries_values and screen.refuses(event)
            }
        )
        pairs = [(refs[e.subject_id], IDENTITY_CATEGORY) for e in events]
        pairs += [
            (refs[e.subject_id], c)
            for i, e in enumerate(events)
            if i not in refused
            for c in e.data
        ]
        keys = self._keys.encryption_keys(pairs)
        isolated: dict[tuple[str, str], DataKey] = {}
        if refused:
            isolated = self._keys.isolated_keys(
                (refs[events[i].subject_id], c) for i in sorted(refused) for c in events[i].data
            )
        published_at = datetime.now(UTC)
        credentials = self._credentials
        encode, produce = self._encode, self._produce
        seal_value = ValueSealer().seal
        for index, event in enumerate(events):
            ref = refs[event.subject_id]
            event_id = event.event_id
            kind = KINDS[event.kind]
            body: dict[str, Any] = dict(event.body)
            if kind.carries_values:
                under = isolated if index in refused else keys
                body["data"] = [
                    seal_value(under[(ref, category)], event_id, value)
                    for category, value in event.data.items()
                ] + [
                    {
                        "category": category,
                        "key_version": WITHHELD_KEY_VERSION,
                        "nonce": b"",
                        "ciphertext": b"",
                    }
                    for category in event.withheld
                ]
            elif event.kind == DELETION_REQUESTED:
                body["key_versions_ended"] = self._end_current_versions(ref, event)
            record = {
                "event_id": event_id,
                "kind": event.kind,
                "occurred_at": event.occurred_at,
                "published_at": published_at,
                "source": event.source,
                "subject_ref": ref,
                "subject": seal_value(keys[(ref, IDENTITY_CATEGORY)], event_id, event.subject_id),
                "actor": {"id": event.actor_id, "role": event.actor_role},
                # the union's branch named (fastavro's tuple notation): otherwise fastavro tries
                # the body against every branch to find the one it fits
                "body": (kind.body_record, body),
                "auth": None,
            }
            value = encode(record)
            if credentials is not None:
                credential = credentials.get(event.source)
                if credential is None:  # the file changed since the line was checked
                    raise PublishError(f"event_id {event_id}: no secret for its source")
                value = seal(value, credential)
            produce(ref.encode(), value)
        self._producer.poll(0)  # the segment's delivery reports so far, once

    def _end_current_versions(self, ref: str, request: InputEvent) -> dict[str, int]:
        """Before an erasure request goes out: end the current key versions of what it covers
        (``subject_id`` too: the worker may destroy it), tell every process, and return the
        versions ended, which the request names. A request that covers every category names
        every category of the policy, 0 for those without a key: a key created later (by a
        concurrent publisher) is then still known to come after the request. Everything
        produced so far is acknowledged first (the rotation record with it): a process that
        starts a chunk after the request was acknowledged has applied the rotation."""
        covered: list[str] | None = request.body.get("categories")
        ended = self._keys.rotate(ref, None if covered is None else [*covered, IDENTITY_CATEGORY])
        if covered is None:
            ended = {
                **dict.fromkeys(sorted(self._vocabulary.categories), 0),
                IDENTITY_CATEGORY: 0,
                **ended,
            }
        notice = revocation_record(ref, ended, rotated=True)
        if not self._revocations_topic_checked:  # a write must not create it with N partitions
            ensure_topic(self._client_config, KEY_REVOCATIONS)
            self._revocations_topic_checked = True
        clients.produce(
            self._producer,
            KEY_REVOCATIONS,
            self._codec.encode("lifecycle.KeyRevocation", notice, KEY_REVOCATIONS),
            ref.encode(),
            on_delivery=functools.partial(self._on_rotation_delivery, request.event_id),
        )
        self.flush()
        return ended

    def _produce(self, key: bytes, value: bytes) -> None:
        try:  # the common case without the general helper's copies
            self._producer.produce(self._topic, value, key, on_delivery=self._on_delivery)
        except BufferError:  # the local queue is full: the helper serves deliveries meanwhile
            clients.produce(self._producer, self._topic, value, key, on_delivery=self._on_delivery)

    def _on_rotation_delivery(
        self, event_id: str, error: KafkaError | None, _message: Message
    ) -> None:
        if error is not None:
            self._failed.append(
                f"the key rotation before event_id {event_id} (not sent): {error.str()}"
            )

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append(f"event_id {self._event_id_of(message)}: {error.str()}")
        else:
            self._delivered += 1

    def _event_id_of(self, message: Message) -> str:
        """The event id of a record this publisher produced (read back only when its
        delivery failed: one callback for every record, rather than one made per record)."""
        try:
            record = self._codec.decode("lifecycle.CustomerEvent", message.value() or b"")
        except Exception:
            return "(unreadable)"
        return str(record["event_id"])

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every delivery report; the count delivered so far. Raises PublishError
        naming the first undelivered event when the broker did not acknowledge every record
        (those it acknowledged stay published)."""
        timeout = self._flush_timeout if timeout is None else timeout
        remaining = self._producer.flush(timeout)
        if remaining:
            raise PublishError(f"{remaining} records not acknowledged within {timeout:.0f}s")
        if self._failed:
            failed, self._failed = self._failed, []
            raise PublishError(
                f"{len(failed)} records not delivered (first: {failed[0]}); "
                f"{self._delivered} delivered"
            )
        return self._delivered

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._revocations is not None:
                self._revocations.stop()
