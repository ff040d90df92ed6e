"""Key revocations: when keys are shredded or current versions ended, every process that caches
keys drops them.

The shredding process publishes a ``KeyRevocation`` record to ``privacy.key-revocations`` after
the destruction committed, naming the versions it destroyed; a publisher that ended current
versions (:meth:`KeyStore.rotate`, before it sends an erasure request) publishes one marked
``rotated``. Every publisher and worker runs a :class:`RevocationListener`: a daemon thread
reading that topic from its end, without a consumer group (each process must see every
record), which calls :meth:`KeyStore.forget`. Decryption does not depend on it (the store is
asked on every decryption); it stops publishers from encrypting new values under a key that no
longer exists or is no longer current. Before a publisher encrypts a batch,
:meth:`RevocationListener.caught_up` waits until every record published before that moment is
applied, so a rotation that happened before the batch began is never missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from core.logging import get_logger
from core.retry import retry_call
from streams import clients
from streams.codec import Codec
from streams.exceptions import DecodeError, KeyStoreError, RegistryUnavailableError
from streams.keys import KeyStore, Versions
from streams.reader import Start, TopicReader
from streams.topics import KEY_REVOCATIONS

log = get_logger(__name__)

REPLAYED = "revocation_replayed"
"""The shred reason of a key destroyed again by ``lifecycle keys reshred`` after a restore."""


def revocation_record(
    subject_ref: str,
    categories: Iterable[str],
    *,
    destroyed: Mapping[str, Versions] | None = None,
    rotated: bool = False,
) -> dict[str, object]:
    """A ``KeyRevocation``: ``destroyed`` names the versions destroyed per category (what
    ``lifecycle keys reshred`` destroys again after a restore); ``rotated``: nothing was
    destroyed, the categories' current versions were ended."""
    named = destroyed or {}
    return {
        "subject_ref": subject_ref,
        "categories": sorted(categories),
        "revoked_at": datetime.now(UTC),
        "through": {c: v.through for c, v in sorted(named.items()) if v.through > 0},
        "versions": {c: sorted(v.exactly) for c, v in sorted(named.items()) if v.exactly},
        "rotated": rotated,
    }


def replay(keystore: KeyStore, record: Mapping[str, Any], reason: str) -> int:
    """Destroy again what one revocation says was destroyed (after a key-store restore); the
    number of categories with a key destroyed now. A rotation destroyed nothing: skipped.
    Versions are replayed exactly; a category the record names no version of (a record
    written before versions were named) loses every key created before ``revoked_at``."""
    if record.get("rotated"):
        return 0
    ref = record["subject_ref"]
    through: Mapping[str, int] = record.get("through") or {}
    exactly: Mapping[str, list[int]] = record.get("versions") or {}
    named = {
        category: Versions(through.get(category, 0), frozenset(exactly.get(category, ())))
        for category in {*through, *exactly}
    }
    destroyed = set(keystore.shred_versions(ref, named, reason)) if named else set()
    unnamed = [c for c in record["categories"] if c not in named]
    if unnamed or not record["categories"]:
        destroyed.update(
            keystore.shred(ref, unnamed or None, reason, created_before=record["revoked_at"])
        )
    return len(destroyed)


class RevocationListener:
    """Drops revoked keys from ``keystore``'s cache as revocation records arrive."""

    def __init__(self, client_config: dict[str, str], codec: Codec, keystore: KeyStore) -> None:
        self._client_config = client_config
        self._codec = codec
        self._keystore = keystore
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._applied = threading.Condition()
        self._position = 0
        """The offset after the last record applied (or skipped as not a revocation)."""
        self._fetched_end = 0
        """The partition's end as the fetch that brought the last record applied reported it."""
        self._ends: Consumer | None = None
        """Asks the broker where the topic ends, in the thread that calls :meth:`caught_up`
        (a consumer is not shared between threads: a query from another thread waited for
        the listener's poll)."""
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
        self._position = max(reader.starts[0], 0)
        self._ready.set()
        for message in reader.messages(follow=True, stop=self._stop.is_set):
            record = self._decode(message)
            if record is not None:
                self._keystore.forget(record["subject_ref"], record["categories"] or None)
            with self._applied:
                self._fetched_end = max(self._fetched_end, reader.fetched_end(0))
                self._position = (message.offset() or 0) + 1
                self._applied.notify_all()
            if record is None:
                continue
            self.heard += 1
            log.info(
                "keys.rotated" if record["rotated"] else "keys.revoked",
                subject_ref=record["subject_ref"],
                categories=record["categories"],
            )

    def _reader(self, start: Start) -> TopicReader:
        return TopicReader(
            self._client_config, KEY_REVOCATIONS, start=start, partitions=[0], label="revocations"
        )

    def caught_up(self, timeout: float = 10.0) -> None:
        """Return once every revocation published before this call has been applied.

        The partition's end is asked of the broker now (ListOffsets); once the listener has
        passed it, the end its own fetches reported (which then include the batch that held
        the last record) is waited for too: the embedded broker's ListOffsets answer may stop
        at the first record of the last batch (see :mod:`streams.offsets`). Raises
        :class:`KeyStoreError` when that takes longer than ``timeout``."""
        if self._stop.is_set() or not self._thread.is_alive():
            raise KeyStoreError("the key revocation listener is not running")
        deadline = time.monotonic() + timeout
        if self._ends is None:
            self._ends = clients.consumer(self._client_config, label="revocations-end")
        try:
            _low, listed = self._ends.get_watermark_offsets(
                TopicPartition(KEY_REVOCATIONS, 0), timeout=timeout
            )
        except KafkaException as exc:
            raise KeyStoreError(f"the end of {KEY_REVOCATIONS} is unknown: {exc}") from exc
        self._reach(lambda: listed, deadline)
        self._reach(lambda: max(listed, self._fetched_end), deadline)

    def _reach(self, offset: Callable[[], int], deadline: float) -> None:
        with self._applied:
            while self._position < offset():
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise KeyStoreError(
                        f"key revocations applied up to offset {self._position} of {offset()}"
                    )
                self._applied.wait(min(left, 0.5))

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
        if self._ends is not None:
            self._ends.close()
            self._ends = None


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
