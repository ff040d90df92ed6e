"""Fault 5b: records that are not ours, produced straight onto ``customer.events`` (not
through the publisher) while a worker decides genuine traffic.

The corpus: random bytes, bit flips and truncations of genuine records, bytes appended, an
unknown schema fingerprint, a record of another schema, a missing header, a value of almost a
megabyte, an empty value without a key, a genuine record under another customer's key, and
exact copies of genuine records (redeliveries). The worker must dead-letter every one that is
not an event (copies are absorbed: the ledger keeps one record per event), stay alive, and
keep deciding: the genuine traffic published after the corpus still gets the decisions the
policy gives, and every offset is accounted for.
"""

from __future__ import annotations

import pytest
from faults.harness import scaled
from faults.hostile import between_genuine_traffic, undecodable

from fixtures.broker import Workers

EVENTS = scaled(2_000, 30_000)
HOSTILE = scaled(500, 8_000)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_records_that_are_not_events_are_dead_lettered_and_the_worker_keeps_deciding(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    outcome = between_genuine_traffic(
        workers,
        lifecycle_env,
        broker,
        EVENTS,
        lambda rng, pool: undecodable(rng, pool.sacrificial, HOSTILE),
    )
    assert outcome.worker.process.poll() is None, outcome.worker.log()[-3000:]
    outcome.report.assert_holds()
    report = outcome.report
    # a bit flip may leave a valid event (a new event_id: decided; a new timestamp: a copy)
    flips = outcome.kinds["bit flips"]
    assert report.dead_lettered >= HOSTILE - outcome.kinds["exact copy"] - flips
    assert report.republished >= outcome.kinds["exact copy"]
    assert report.decided - len(outcome.stream.events) <= flips
