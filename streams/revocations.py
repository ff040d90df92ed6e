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

from confluent_kafka import OFFSET_BEGINNING, KafkaException

from core.logging import get_logger
from core.retry import retry_call
from streams.codec import Codec
from streams.exceptions import DecodeError, RegistryUnavailableError
from streams.keys import KeyStore
from streams.reader import Start, TopicReader
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
        self._client_config = client_config
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
        # From the end as it is now, fixed before start() returns, so no revocation sent after
        # start() can slip past (a start left for librdkafka to resolve later could: the
        # process would then keep a shredded key cached).
        try:
            reader = self._reader("end")
        except KafkaException as exc:  # from the first one then: forgetting too much is safe
            log.warning("revocations.end_unknown", reading_from="beginning", error=str(exc))
            reader = self._reader({0: OFFSET_BEGINNING})
        self._ready.set()
        for message in reader.messages(follow=True, stop=self._stop.is_set):
            record = self._decode(message)
            if record is None:
                continue
            self._keystore.forget(record["subject_ref"], record["categories"] or None)
            self.heard += 1
            log.info(
                "keys.revoked", subject_ref=record["subject_ref"], categories=record["categories"]
            )

    def _reader(self, start: Start) -> TopicReader:
        return TopicReader(
            self._client_config, KEY_REVOCATIONS, start=start, partitions=[0], label="revocations"
        )

    def _decode(self, message: Any) -> dict[str, Any] | None:
        """The revocation, or None when the record is not one. While the Schema Registry
        cannot be asked, keep asking: skipping a revocation would leave shredded keys cached."""

        def notice(exc: BaseException, wait: float) -> None:
            log.warning("registry.unavailable", retry_in_s=wait, error=str(exc)[:300])

        try:
            return retry_call(
                lambda: self._codec.decode(
                    "lifecycle.KeyRevocation", message.value() or b"", KEY_REVOCATIONS
                ),
                on=RegistryUnavailableError,
                first=0.25,
                most=8.0,
                stop=self._stop,
                notice=notice,
            )
        except DecodeError as exc:
            log.error("revocation.undecodable", offset=message.offset(), error=str(exc))
        except RegistryUnavailableError:  # stopping meanwhile
            pass
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def read_revocations(client_config: dict[str, str], codec: Codec) -> Iterator[dict[str, Any]]:
    """Every revocation on ``privacy.key-revocations``, oldest first, to the topic's end.

    For re-destroying keys after a restore (``lifecycle keys reshred``): nothing may write
    to the topic meanwhile. A record that does not decode is an error, not skipped: a
    revocation passed over would leave an erased customer's key alive."""
    reader = TopicReader(client_config, KEY_REVOCATIONS, partitions=[0], label="reshred")
    for message in reader.messages():
        try:
            yield codec.decode("lifecycle.KeyRevocation", message.value() or b"", KEY_REVOCATIONS)
        except DecodeError as exc:
            raise DecodeError(
                f"{KEY_REVOCATIONS} offset {message.offset()} is not a revocation: {exc}"
            ) from exc
