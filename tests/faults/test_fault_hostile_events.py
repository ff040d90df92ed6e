"""Fault 5c: records that decode but are not valid events, produced straight onto
``customer.events`` while a worker decides genuine traffic.

* Invalid events: a kind that does not match the body, an empty event_id or source, a
  subject_ref that is empty or not the pseudonym, names no policy knows, a 200 KB string,
  instants at the ends of time, garbage where ciphertext should be; and valid events on a
  partition their key does not map to (where their customer's state is not). Each must get
  the decision the policy gives, in the ledger, or a dead letter; the worker must not die.
* Forged erasure requests reusing the event_id of another customer's decided event (an
  idempotency-key collision): nothing may be erased without an audit record, so the targeted
  customers' later uses must still be decided as the policy says (allowed).
"""

from __future__ import annotations

import pytest
from faults.harness import scaled
from faults.hostile import between_genuine_traffic, forged_erasures, invalid_events

from fixtures.broker import Workers

EVENTS = scaled(2_000, 30_000)
INVALID = scaled(200, 3_000)
FORGED = scaled(5, 30)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_events_that_decode_but_are_invalid_are_decided_or_dead_lettered_never_fatal(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    outcome = between_genuine_traffic(
        workers,
        lifecycle_env,
        broker,
        EVENTS,
        lambda rng, pool: invalid_events(rng, pool.sacrificial, INVALID),
    )
    assert outcome.worker.process.poll() is None, outcome.worker.log()[-3000:]
    outcome.report.assert_holds()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_erasure_reusing_another_events_id_erases_nothing_unaudited(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    outcome = between_genuine_traffic(
        workers,
        lifecycle_env,
        broker,
        EVENTS,
        lambda rng, pool: forged_erasures(rng, pool.genuine, rng.sample(pool.targets, FORGED)),
    )
    assert outcome.worker.process.poll() is None, outcome.worker.log()[-3000:]
    outcome.report.assert_holds()
