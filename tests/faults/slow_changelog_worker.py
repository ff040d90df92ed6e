"""``lifecycle up`` with table changelog records that take ``LIFECYCLE_TEST_CHANGELOG_DELAY``
seconds to be acknowledged, killed (SIGKILL) right after its first offset commit.

Run as a script (``python tests/faults/slow_changelog_worker.py``). It slows whichever
producer carries the subjects table's changelog: Faust's (a send is held before it reaches
the broker) or the stage's outbox (a flush returns only once the held records are due), so
the kill lands between the offset commit and the changelog acknowledgement whenever the
commit does not wait for that acknowledgement.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

from faust.transport.drivers import aiokafka as faust_kafka

from lifecycle.cli import main as lifecycle_main
from processors.progress import Progress
from streams.outbox import Outbox

DELAY = float(os.environ.get("LIFECYCLE_TEST_CHANGELOG_DELAY", "5"))


def is_changelog(topic: str) -> bool:
    return topic.endswith("-changelog")


def slow_faust_changelog() -> None:
    send = faust_kafka.Producer.send

    async def held_send(self: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
        if is_changelog(topic):
            await asyncio.sleep(DELAY)
        return await send(self, topic, *args, **kwargs)

    faust_kafka.Producer.send = held_send


def slow_outbox_changelog() -> None:
    produce, flush_now = Outbox.produce, Outbox.flush_now
    due: dict[int, float] = {}

    def held_produce(self: Outbox, topic: str, *args: Any, **kwargs: Any) -> None:
        if is_changelog(topic):
            due[id(self)] = time.monotonic() + DELAY
        produce(self, topic, *args, **kwargs)

    def held_flush(self: Outbox, timeout: float = 120.0) -> None:
        wait = due.pop(id(self), 0.0) - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # in the flush's own thread: the ack arrives late
        flush_now(self, timeout)

    Outbox.produce = held_produce  # type: ignore[method-assign]
    Outbox.flush_now = held_flush  # type: ignore[method-assign]


def die_after_first_commit() -> None:
    commit = Progress.commit

    async def commit_then_die(self: Progress) -> None:
        before = sum(self.committed().values())
        await commit(self)
        after = sum(self.committed().values())
        if after > before:
            print(f"test.killed_after_commit committed={after}", flush=True)
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    Progress.commit = commit_then_die  # type: ignore[method-assign]


if __name__ == "__main__":
    slow_faust_changelog()
    slow_outbox_changelog()
    die_after_first_commit()
    sys.argv = ["lifecycle", "up"]
    lifecycle_main()
