"""The console on the bus: filing erasure requests through the project's publisher, watching
``privacy.deletion-confirmations`` for their answers, and listing dead letters without their
content."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.logging import get_logger
from lifecycle.runtime import Runtime
from streams.codec import Codec
from streams.exceptions import DecodeError, SourceError
from streams.offsets import end_offsets
from streams.publisher import Publisher
from streams.reader import TopicReader
from streams.sourceauth import SourceCredentials
from streams.topics import CONFIRMATIONS, DEAD_LETTERS

log = get_logger(__name__)

KEEP_CONFIRMATIONS = 10_000


class ConfirmationWatcher:
    """Follows ``privacy.deletion-confirmations`` from its end (fixed when this starts, so an
    answer to a request filed after that is never missed) and keeps the latest answers by
    request id."""

    def __init__(
        self,
        client_config: dict[str, str],
        codec: Codec,
        on_confirmation: Callable[[dict[str, Any]], None] = lambda _confirmation: None,
    ) -> None:
        self._codec = codec
        self._on_confirmation = on_confirmation
        # the end is fixed here, before any request is filed through this console
        self._reader = TopicReader(
            client_config, CONFIRMATIONS, start="end", partitions=[0], label="console"
        )
        self._seen: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-confirmations", daemon=True)
        self._thread.start()

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._seen.get(request_id)

    def wait(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        with self._arrived:
            self._arrived.wait_for(lambda: request_id in self._seen, timeout)
            return self._seen.get(request_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        for message in self._reader.messages(follow=True, stop=self._stop.is_set):
            try:
                record = self._codec.decode(
                    "lifecycle.DeletionConfirmation", message.value() or b"", CONFIRMATIONS
                )
            except DecodeError as exc:
                log.warning("console.confirmation_undecodable", error=str(exc)[:200])
                continue
            with self._arrived:
                self._seen[record["request_id"]] = record
                self._seen.move_to_end(record["request_id"])
                while len(self._seen) > KEEP_CONFIRMATIONS:
                    self._seen.popitem(last=False)
                self._arrived.notify_all()
            self._on_confirmation(record)


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A dead letter as the console shows it: where it came from, why, when. Never its value."""

    offset: int
    when: str
    source_topic: str
    source_partition: str
    source_offset: str
    error: str
    value_sha256: str


def dead_letters(
    client_config: dict[str, str], limit: int = 500
) -> tuple[list[DeadLetterRow], int]:
    """The newest ``limit`` records of ``customer.events.dlq`` (newest first), and how many
    it holds (it is never compacted nor expired). Only headers and timestamps are read into
    the rows."""
    end = end_offsets(client_config, [(DEAD_LETTERS, 0)])[(DEAD_LETTERS, 0)]
    reader = TopicReader(
        client_config,
        DEAD_LETTERS,
        start={0: max(0, end - limit)},
        partitions=[0],
        label="console-dlq",
    )
    if end == 0:
        reader.close()
        return [], 0
    rows: list[DeadLetterRow] = []
    for message in reader.messages(within=30):
        headers: dict[str, str] = {}
        for header in message.headers() or []:
            name, value = header[0], header[1]
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            headers[str(name)] = text or ""
        _kind, stamp = message.timestamp()
        rows.append(
            DeadLetterRow(
                offset=message.offset() or 0,
                when=datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="seconds")
                if stamp > 0
                else "",
                source_topic=headers.get("lifecycle.source.topic", ""),
                source_partition=headers.get("lifecycle.source.partition", ""),
                source_offset=headers.get("lifecycle.source.offset", ""),
                error=headers.get("lifecycle.error", ""),
                value_sha256=headers.get("lifecycle.value.sha256", ""),
            )
        )
    return rows[::-1], end


class ErasureFiler:
    """Publishes erasure requests (``deletion_requested``) through the project's
    :class:`~streams.publisher.Publisher`: the customer id is encrypted before it leaves."""

    def __init__(
        self, runtime: Runtime, on_filed: Callable[[str], None] = lambda _request_id: None
    ) -> None:
        self._runtime = runtime
        self._on_filed = on_filed
        self._lock = threading.Lock()
        self._publisher: Publisher | None = None

    def file(self, *, subject_id: str, request_id: str, categories: list[str], officer: str) -> str:
        event: dict[str, Any] = {
            "kind": "deletion_requested",
            "source": "console",
            "subject_id": subject_id,
            "actor": {"id": officer, "role": "privacy_officer"},
            "request_id": request_id,
        }
        if categories:
            event["categories"] = categories
        with self._lock:
            if self._publisher is None:
                self._publisher = self._runtime.publisher(credentials=self._credentials())
            event_id = self._publisher.publish(event)
            self._publisher.flush(30)
        self._on_filed(request_id)
        return event_id

    def _credentials(self) -> SourceCredentials:
        """The console's own source secret (the built-in source ``console``, registered on
        first use): workers refuse destructive requests no registered source vouches for."""
        credential = self._runtime.sources.ensure_builtin("console")
        if credential is None:
            raise SourceError(
                "the source console was removed, so the console cannot file requests: "
                "register it again (lifecycle sources add console --roles privacy_officer "
                "--destructive erasure)"
            )
        return SourceCredentials([credential])

    def close(self) -> None:
        with self._lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None


__all__ = ["ConfirmationWatcher", "DeadLetterRow", "ErasureFiler", "dead_letters"]
