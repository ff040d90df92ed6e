"""The workers run on uvloop unless ``LIFECYCLE_EVENT_LOOP=asyncio``; both decide alike."""

from __future__ import annotations

import json

import pytest

from streams.topics import DECISIONS

from fixtures.broker import REPO, Workers, read_topic, run_cli

EXAMPLES = REPO / "examples" / "events.jsonl"


@pytest.mark.parametrize("setting", ["", "asyncio", "uvloop"])
def test_a_worker_decides_every_event_on_the_event_loop_it_was_given(
    setting: str, broker: str, lifecycle_env: dict[str, str], workers: Workers
) -> None:
    expected = setting or "uvloop"  # the default
    worker = workers.start(LIFECYCLE_EVENT_LOOP=setting)
    worker.wait_for_log('"worker.event_loop"', timeout=90)
    assert run_cli(lifecycle_env, "publish", str(EXAMPLES)).returncode == 0
    lines = EXAMPLES.read_bytes().splitlines()
    decided = read_topic(broker, DECISIONS, min_count=len(lines), timeout=90)
    assert len(decided) == len(lines)
    reported = [
        json.loads(line) for line in worker.log().splitlines() if '"worker.event_loop"' in line
    ]
    assert [r["loop"] for r in reported] == [expected]


def test_an_unknown_event_loop_is_refused_by_name(lifecycle_env: dict[str, str]) -> None:
    done = run_cli({**lifecycle_env, "LIFECYCLE_EVENT_LOOP": "trio"}, "up")
    assert done.returncode != 0
    assert b"LIFECYCLE_EVENT_LOOP must be one of uvloop, asyncio, got 'trio'" in done.stderr
