"""Key revocations: when keys are shredded, every process that caches keys drops them.

The shredding process publishes a ``KeyRevocation`` record to ``privacy.key-revocations`` after
the destruction committed. Every publisher and worker runs a :class:`RevocationListener`: a
daemon thread reading that topic from its end, without a consumer group (each process must
see every record), which calls :meth:`KeyStore.forget`. Decryption does not depend on it
(the store is asked on every decryption); it stops publishers from encrypting new values under
a key that no longer exists.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from core.logging import get_logger, librdkafka_logger
from core.settings import FETCH_WAIT_MS
from streams.codec import Codec
from streams.exceptions import DecodeError, RegistryUnavailableError
from streams.keys import KeyStore
from streams.offsets import read_whole
from streams.topics import KEY_REVOCATIONS

log = get_logger(__name__)

REPLAYED = "revocation_replayed"
"""The shred reason of a key destroyed again by ``lifecycle keys reshred`` after a restore."""


def revocation_record(subject_ref: str, categories: Iterable[str]) -> dict[str, object]:
    return {
        "subject_ref": subject_ref,
        "categories": sorted(categories),
        "revoked_at": datetime.now(UTC),
    }


class RevocationListener:
    """Drops revoked keys from ``keystore``'s cache as revocation records arrive."""

    def __init__(self, client_config: dict[str, str], codec: Codec, keystore: KeyStore) -> None:
        self._consumer = Consumer(
            {
                "fetch.wait.max.ms": str(FETCH_WAIT_MS),  # unless client_config says
                **client_config,
                "group.id": "lifecycle-revocations",  # required by the client; never joined
                "logger": librdkafka_logger(),
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            }
        )
        self._codec = codec
        self._keystore = keystore
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.heard = 0
        self._thread = threading.Thread(target=self._run, name="key-revocations", daemon=True)

    def start(self, timeout: float = 10.0) -> RevocationListener:
        self._thread.start()
        self._ready.wait(timeout)
        return self

    def _run(self) -> None:
        # From the end as it is now, fixed before start() returns: assigning OFFSET_END leaves
        # librdkafka to look the end up later, and a revocation sent in between was skipped
        # (a test saw a publisher keep a shredded key cached). The embedded broker may give an
        # end a batch short: older revocations read again only drop cache entries.
        try:
            _low, start = self._consumer.get_watermark_offsets(
                TopicPartition(KEY_REVOCATIONS, 0), timeout=8
            )
        except KafkaException as exc:  # from the first one then: forgetting too much is safe
            log.warning("revocations.end_unknown", reading_from="beginning", error=str(exc))
            start = OFFSET_BEGINNING
        self._consumer.assign([TopicPartition(KEY_REVOCATIONS, 0, start)])
        self._ready.set()
        try:
            while not self._stop.is_set():
                message = self._consumer.poll(0.1)
                if message is None or message.error():
                    continue
                record = self._decode(message)
                if record is None:
                    continue
                self._keystore.forget(record["subject_ref"], record["categories"] or None)
                self.heard += 1
                log.info(
                    "keys.revoked",
                    subject_ref=record["subject_ref"],
                    categories=record["categories"],
                )
        finally:
            self._consumer.close()

    def _decode(self, message: Any) -> dict[str, Any] | None:
        """The revocation, or None when the record is not one. While the Schema Registry
        cannot be asked, keep asking: skipping a revocation would leave shredded keys cached."""
        delay = 0.25
        while True:
            try:
                return self._codec.decode(
                    "lifecycle.KeyRevocation", message.value() or b"", KEY_REVOCATIONS
                )
            except DecodeError as exc:
                log.error("revocation.undecodable", offset=message.offset(), error=str(exc))
                return None
            except RegistryUnavailableError as exc:
                log.warning("registry.unavailable", retry_in_s=delay, error=str(exc)[:300])
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, 8.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def read_revocations(client_config: dict[str, str], codec: Codec) -> Iterator[dict[str, Any]]:
    """Every revocation on ``privacy.key-revocations``, oldest first, to the topic's end.

    For re-destroying keys after a restore (``lifecycle keys reshred``): nothing may write
    to the topic meanwhile. A record that does not decode is an error, not skipped: a
    revocation passed over would leave an erased customer's key alive."""
    for message in read_whole(client_config, KEY_REVOCATIONS, "reshred"):
        try:
            yield codec.decode("lifecycle.KeyRevocation", message.value() or b"", KEY_REVOCATIONS)
        except DecodeError as exc:
            raise DecodeError(
                f"{KEY_REVOCATIONS} offset {message.offset()} is not a revocation: {exc}"
            ) from exc
