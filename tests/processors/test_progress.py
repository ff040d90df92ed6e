"""The intake's own partition positions (processors/progress.py), with an in-memory stand-in
for Faust's consumer: what is decided, what is sought back and what is committed, whatever
order the consumer delivers records in. The fault tests (tests/faults/) run the same code in
real workers on the embedded broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

import processors.progress as progress_module
from processors.progress import Progress
from streams.topics import CUSTOMER_EVENTS


class FakeConsumer:
    def __init__(self, assigned: Iterable[int]) -> None:
        self.assigned = {TP(CUSTOMER_EVENTS, number) for number in assigned}
        self.seeks: list[tuple[int, int]] = []
        self.commits: list[dict[int, int]] = []
        self.resumed: list[int] = []
        self._buffered_partitions: set[TP] = set()
        self._active_partitions: set[TP] = set(self.assigned)
        self._paused_partitions: set[TP] = set()

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        self.commits.append(
            {tp.partition: offset for tp, offset in offsets.items() if tp in self.assigned}
        )
        return True

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        self.resumed.extend(tp.partition for tp in tps)


def event(partition: int, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset))


@pytest.fixture
def committed(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, int], int]:
    """What the group has committed on the "broker" (start_offsets reads it)."""
    group_commits: dict[tuple[str, int], int] = {}

    def start_offsets(
        config: Any, group: str, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        return {tp: group_commits.get(tp, 0) for tp in partitions}

    monkeypatch.setattr(progress_module, "start_offsets", start_offsets)
    return group_commits


def make(assigned: Iterable[int]) -> tuple[Progress, FakeConsumer]:
    consumer = FakeConsumer(assigned)
    app = SimpleNamespace(consumer=consumer, conf=SimpleNamespace(id="lifecycle"))
    return Progress(app, {"bootstrap.servers": "unused"}), consumer  # type: ignore[arg-type]


def offsets(admitted: Any) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in admitted.events]


def test_a_partition_starts_at_the_groups_commit_and_passes_over_what_is_before_it(
    committed: dict[tuple[str, int], int],
) -> None:
    committed[(CUSTOMER_EVENTS, 0)] = 5
    progress, consumer = make([0])
    admitted = asyncio.run(progress.admit([event(0, n) for n in range(3, 8)]))
    assert offsets(admitted) == [(0, 5), (0, 6), (0, 7)]
    assert progress.passed_over == 2
    assert consumer.seeks == []


def test_an_event_ahead_of_the_position_is_not_decided_and_the_consumer_is_sought_back(
    committed: dict[tuple[str, int], int],
) -> None:
    progress, consumer = make([0, 1])
    first = asyncio.run(progress.admit([event(0, 0), event(0, 1), event(1, 0)]))
    assert offsets(first) == [(0, 0), (0, 1), (1, 0)]
    # a record fetched before a partition moved arrives ahead of partition 0's position
    second = asyncio.run(progress.admit([event(0, 40), event(0, 41), event(1, 1)]))
    assert offsets(second) == [(1, 1)]
    assert consumer.seeks == [(0, 2)]
    # the sought-back records come, then the rest in order
    third = asyncio.run(progress.admit([event(0, n) for n in range(2, 42)]))
    assert offsets(third) == [(0, n) for n in range(2, 42)]


def test_only_offsets_whose_outputs_are_acknowledged_are_committed(
    committed: dict[tuple[str, int], int],
) -> None:
    progress, consumer = make([0, 1])
    decided = asyncio.run(progress.admit([event(0, 0), event(0, 1), event(1, 0)]))
    asyncio.run(progress.commit())
    assert consumer.commits == []  # admitted, outputs not yet acknowledged
    progress.done(decided)
    asyncio.run(progress.commit())
    assert consumer.commits == [{0: 2, 1: 1}]
    assert progress.committed() == {0: 2, 1: 1}
    skipped = asyncio.run(progress.admit([event(0, 9)]))  # a skip: nothing admitted
    progress.done(skipped)
    asyncio.run(progress.commit())
    assert consumer.commits == [{0: 2, 1: 1}]  # nothing new to commit


def test_a_revoked_partition_commits_what_is_durable_and_starts_again_from_the_group(
    committed: dict[tuple[str, int], int],
) -> None:
    progress, consumer = make([0])
    in_flight = asyncio.run(progress.admit([event(0, 0), event(0, 1)]))
    asyncio.run(progress.on_revoked({TP(CUSTOMER_EVENTS, 0)}))
    assert consumer.commits == []  # the batch in flight was not durable yet
    progress.done(in_flight)  # its outputs land after the partition left: not committed
    asyncio.run(progress.commit())
    assert consumer.commits == []
    # an event fetched before the revocation, delivered before the next assignment: not decided
    assert offsets(asyncio.run(progress.admit([event(0, 2)]))) == []
    # the partition comes back after another worker decided and committed up to 7
    committed[(CUSTOMER_EVENTS, 0)] = 7
    progress.on_assigned()
    again = asyncio.run(progress.admit([event(0, 6), event(0, 7)]))
    assert offsets(again) == [(0, 7)]


def test_a_partition_no_longer_assigned_is_neither_committed_nor_kept(
    committed: dict[tuple[str, int], int],
) -> None:
    progress, consumer = make([0, 1])
    progress.done(asyncio.run(progress.admit([event(0, 0), event(1, 0)])))
    consumer.assigned = {TP(CUSTOMER_EVENTS, 1)}  # moved without a revocation heard here
    asyncio.run(progress.commit())
    assert consumer.commits == [{1: 1}]
    progress.on_assigned()
    assert progress.committed() == {1: 1}


def test_a_partition_behind_its_end_that_does_not_move_is_resumed_and_sought_back(
    committed: dict[tuple[str, int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(
        progress_module,
        "end_offsets",
        lambda config, partitions: {tp: 50 if tp[1] == 0 else 4 for tp in partitions},
    )
    progress, consumer = make([0, 1])
    progress.done(asyncio.run(progress.admit([event(0, 0), event(1, 0), event(1, 1)])))
    asyncio.run(progress.watch())
    assert consumer.resumed == [] and consumer.seeks == []  # not idle long enough
    clock[0] += progress_module.STALL_AFTER + 1
    busy = asyncio.run(progress.admit([event(1, 2)]))  # a batch the agent is still deciding
    asyncio.run(progress.watch())
    assert consumer.resumed == [] and consumer.seeks == []  # busy is not stalled
    progress.done(busy)
    asyncio.run(progress.watch())
    # partition 0 is 49 records short of its end and idle; partition 1 is short too, but moved
    assert consumer.resumed == [0]
    assert consumer.seeks == [(0, 1)]
