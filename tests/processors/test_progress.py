"""The intake's own partition positions (processors/progress.py), with in-memory stand-ins for
Faust's consumer (the group member that commits) and the partition reader: what is decided,
what is sought back and what is committed, whatever order the reader delivers records in.
The fault tests (tests/faults/) run the same code in real workers on the embedded broker."""

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
    """Faust's consumer: the group's assignment, and commits."""

    def __init__(self, assigned: Iterable[int]) -> None:
        self.assigned = {TP(CUSTOMER_EVENTS, number) for number in assigned}
        self.commits: list[dict[int, int]] = []

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        self.commits.append(
            {tp.partition: offset for tp, offset in offsets.items() if tp in self.assigned}
        )
        return True


class FakeReader:
    """The partition reader: what it was told to read, and from where."""

    def __init__(self) -> None:
        self.reading: dict[int, int] = {}
        self.seeks: list[tuple[int, int]] = []

    @property
    def assigned(self) -> frozenset[int]:
        return frozenset(self.reading)

    async def assign(self, starts: Mapping[int, int]) -> None:
        self.reading.update(starts)

    async def unassign(self, partitions: Iterable[int]) -> None:
        for number in partitions:
            self.reading.pop(number, None)

    async def seek(self, partition: int, offset: int) -> None:
        self.seeks.append((partition, offset))


class Record:
    """A librdkafka message's accessors."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


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


def make(assigned: Iterable[int]) -> tuple[Progress, FakeConsumer, FakeReader]:
    consumer = FakeConsumer(assigned)
    reader = FakeReader()
    app = SimpleNamespace(consumer=consumer, conf=SimpleNamespace(id="lifecycle"))
    progress = Progress(app, {"bootstrap.servers": "unused"}, reader)  # type: ignore[arg-type]
    asyncio.run(progress.start())
    return progress, consumer, reader


def records(partition: int, offsets: Iterable[int]) -> list[Any]:
    return [Record(partition, offset) for offset in offsets]


def offsets(admitted: Any) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for m in admitted.messages]


def test_a_partition_is_read_from_the_groups_commit_and_what_is_before_it_is_passed_over(
    committed: dict[tuple[str, int], int],
) -> None:
    committed[(CUSTOMER_EVENTS, 0)] = 5
    progress, _consumer, reader = make([0])
    assert reader.reading == {0: 5}
    admitted = progress.admit(records(0, range(3, 8)))
    assert offsets(admitted) == [(0, 5), (0, 6), (0, 7)]
    assert progress.passed_over == 2
    asyncio.run(progress.seek_back())
    assert reader.seeks == []


def test_an_event_ahead_of_the_position_is_not_decided_and_the_reader_is_sought_back(
    committed: dict[tuple[str, int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress, _consumer, reader = make([0, 1])
    first = progress.admit([*records(0, [0, 1]), *records(1, [0])])
    assert offsets(first) == [(0, 0), (0, 1), (1, 0)]
    # a record ahead of partition 0's position: something before it was not read
    second = progress.admit([*records(0, [40, 41]), *records(1, [1])])
    assert offsets(second) == [(1, 1)]
    asyncio.run(progress.seek_back())
    assert reader.seeks == [(0, 2)]
    # still not there a moment later: not sought again yet; after RESEEK_AFTER, again
    asyncio.run(progress.seek_back())
    assert reader.seeks == [(0, 2)]
    clock[0] += progress_module.RESEEK_AFTER
    asyncio.run(progress.seek_back())
    assert reader.seeks == [(0, 2), (0, 2)]
    # the sought-back records come, then the rest in order: no more seeks
    third = progress.admit(records(0, range(2, 42)))
    assert offsets(third) == [(0, n) for n in range(2, 42)]
    clock[0] += progress_module.RESEEK_AFTER
    asyncio.run(progress.seek_back())
    assert reader.seeks == [(0, 2), (0, 2)]


def test_only_offsets_whose_outputs_are_acknowledged_are_committed(
    committed: dict[tuple[str, int], int],
) -> None:
    progress, consumer, _reader = make([0, 1])
    decided = progress.admit([*records(0, [0, 1]), *records(1, [0])])
    asyncio.run(progress.commit())
    assert consumer.commits == []  # admitted, outputs not yet acknowledged
    progress.done(decided)
    asyncio.run(progress.commit())
    assert consumer.commits == [{0: 2, 1: 1}]
    assert progress.committed() == {0: 2, 1: 1}
    skipped = progress.admit(records(0, [9]))  # a skip: nothing admitted
    progress.done(skipped)
    asyncio.run(progress.commit())
    assert consumer.commits == [{0: 2, 1: 1}]  # nothing new to commit


def test_a_revoked_partition_commits_what_is_durable_and_starts_again_from_the_group(
    committed: dict[tuple[str, int], int],
) -> None:
    progress, consumer, reader = make([0])
    durable = progress.admit(records(0, [0, 1]))
    progress.done(durable)
    in_flight = progress.admit(records(0, [2]))
    asyncio.run(progress.on_revoked({TP(CUSTOMER_EVENTS, 0)}))
    assert consumer.commits == [{0: 2}]  # what was durable, not the batch in flight
    assert reader.reading == {}  # no longer read
    progress.done(in_flight)  # its outputs land after the partition left: not committed
    asyncio.run(progress.commit())
    assert consumer.commits == [{0: 2}]
    # a record read before the revocation, delivered after it: not decided
    assert offsets(progress.admit(records(0, [2]))) == []
    # the partition comes back after another worker decided and committed up to 7
    committed[(CUSTOMER_EVENTS, 0)] = 7
    asyncio.run(progress.start())
    assert reader.reading == {0: 7}
    again = progress.admit(records(0, [6, 7]))
    assert offsets(again) == [(0, 7)]


def test_a_partition_no_longer_assigned_is_neither_committed_kept_nor_read(
    committed: dict[tuple[str, int], int],
) -> None:
    progress, consumer, reader = make([0, 1])
    progress.done(progress.admit([*records(0, [0]), *records(1, [0])]))
    consumer.assigned = {TP(CUSTOMER_EVENTS, 1)}  # moved without a revocation heard here
    asyncio.run(progress.commit())
    assert consumer.commits == [{1: 1}]
    asyncio.run(progress.start())
    assert progress.committed() == {1: 1}
    assert reader.reading == {1: 0}


def test_a_partition_behind_its_end_that_does_not_move_is_sought_back(
    committed: dict[tuple[str, int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(
        progress_module,
        "end_offsets",
        lambda config, partitions: {tp: 50 if tp[1] == 0 else 4 for tp in partitions},
    )
    progress, _consumer, reader = make([0, 1])
    progress.done(progress.admit([*records(0, [0]), *records(1, [0, 1])]))
    asyncio.run(progress.watch())
    assert reader.seeks == []  # not idle long enough
    clock[0] += progress_module.STALL_AFTER + 1
    busy = progress.admit(records(1, [2]))  # a batch the intake is still deciding
    asyncio.run(progress.watch())
    assert reader.seeks == []  # busy is not stalled
    progress.done(busy)
    asyncio.run(progress.watch())
    # partition 0 is 49 records short of its end and idle; partition 1 is short too, but moved
    assert reader.seeks == [(0, 1)]
