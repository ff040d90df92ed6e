"""The publisher upstream systems use: validate, encrypt, encode, produce, confirm delivery.

Nothing plaintext leaves it: ``data`` values are encrypted field by field with the subject's
data keys, ``subject_id`` is encrypted under the subject's identity key, and the record key is
``subject_ref`` (so one subject's events stay in order on one partition).

Lines are handled in chunks: one key-store round trip fetches (or creates) every data key a
chunk needs, then each event is encrypted, Avro-encoded and handed to an idempotent
confluent-kafka producer (``acks=all``). :meth:`Publisher.flush` waits for every delivery report
and raises :class:`~streams.exceptions.PublishError` if the broker refused any record.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message

from core.logging import get_logger
from schemas.kinds import KINDS
from streams import clients
from streams.clients import DELIVERY_TIMEOUT_MS
from streams.codec import Codec
from streams.envelope import encrypt_value
from streams.events import InputEvent, Vocabulary, parse_line
from streams.exceptions import PublishError, ValidationError
from streams.keys import IDENTITY_CATEGORY, KeyStore
from streams.revocations import RevocationListener
from streams.topics import CUSTOMER_EVENTS

log = get_logger(__name__)

CHUNK = 2_000
WITHHELD_KEY_VERSION = 0
"""``key_version`` of a value the policy forbade collecting: no key, no ciphertext."""


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
    ) -> None:
        self._producer = clients.producer(client_config, delivery_timeout_ms=delivery_timeout_ms)
        self._flush_timeout = delivery_timeout_ms / 1000 + 10
        self._revocations: RevocationListener | None = None
        if listen_for_revocations:  # never encrypt under a key another process shredded
            self._revocations = RevocationListener(client_config, codec, keystore).start()
        self._keys = keystore
        self._codec = codec
        self._vocabulary = vocabulary
        self._topic = topic
        self._failed: list[str] = []
        self._delivered = 0

    # -- one event -------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> str:
        """Validate and publish one event given as a dict of the input format; its event_id."""
        from streams.events import validate

        valid = validate(event, self._vocabulary)
        self._send_chunk([valid])
        return valid.event_id

    # -- many lines ------------------------------------------------------------------------

    def publish_lines(self, lines: Iterable[str | bytes], *, flush: bool = True) -> PublishReport:
        """Publish JSON lines; invalid ones are reported (line number, field) and skipped."""
        report = PublishReport()
        numbered: Iterator[tuple[int, str | bytes]] = enumerate(lines, start=1)
        while chunk := list(itertools.islice(numbered, CHUNK)):
            valid: list[InputEvent] = []
            now = datetime.now(UTC)
            for lineno, line in chunk:
                if not line.strip():
                    continue
                try:
                    valid.append(parse_line(line, self._vocabulary, now=now))
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
        refs = {e.subject_id: self._keys.subject_ref(e.subject_id) for e in events}
        pairs = [(refs[e.subject_id], IDENTITY_CATEGORY) for e in events]
        pairs += [(refs[e.subject_id], c) for e in events for c in e.data]
        keys = self._keys.encryption_keys(pairs)
        published_at = datetime.now(UTC)
        for event in events:
            ref = refs[event.subject_id]
            kind = KINDS[event.kind]
            body: dict[str, Any] = dict(event.body)
            if kind.carries_values:
                body["data"] = [
                    encrypt_value(keys[(ref, category)], event.event_id, value)
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
            record = {
                "event_id": event.event_id,
                "kind": event.kind,
                "occurred_at": event.occurred_at,
                "published_at": published_at,
                "source": event.source,
                "subject_ref": ref,
                "subject": encrypt_value(
                    keys[(ref, IDENTITY_CATEGORY)], event.event_id, event.subject_id
                ),
                "actor": {"id": event.actor_id, "role": event.actor_role},
                # the union's branch named (fastavro's tuple notation): otherwise fastavro tries
                # the body against every branch to find the one it fits, a large part of the
                # encoding's cost
                "body": (kind.body_record, body),
            }
            self._produce(
                event.event_id,
                ref.encode(),
                self._codec.encode("lifecycle.CustomerEvent", record, self._topic),
            )

    def _produce(self, event_id: str, key: bytes, value: bytes) -> None:
        report = functools.partial(self._on_delivery, event_id)
        clients.produce(self._producer, self._topic, value, key, on_delivery=report)

    def _on_delivery(self, event_id: str, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._failed.append(f"event_id {event_id}: {error.str()}")
        else:
            self._delivered += 1

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
