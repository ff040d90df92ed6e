"""Fault 5d: forged and replayed source MACs, produced straight onto ``customer.events``
while a worker decides genuine traffic (the intruder can write to the bus and knows the
schemas, but holds no source's secret).

Copies of genuine authenticated events are relabelled as a privacy officer's erasure or
consent withdrawal, or claim a role, with their MAC kept, removed, replayed from another
record, replaced by random bytes, or claimed for another source. Each must be refused
``source_unauthenticated`` in the ledger and change nothing: no confirmation for a forged
request, and the targeted customers' later uses are still decided as the policy says
(allowed). Exact replays of genuine records are absorbed as redeliveries.
"""

from __future__ import annotations

import pytest
from faults.harness import scaled
from faults.hostile import FORGED_MAC_KINDS, between_genuine_traffic, forged_macs, replayed_macs
from faults.invariants import CODEC, ledger_rows, read_all

from streams.topics import CONFIRMATIONS

from fixtures.broker import Workers

EVENTS = scaled(2_000, 30_000)
FORGED = scaled(len(FORGED_MAC_KINDS) * 4, len(FORGED_MAC_KINDS) * 40)
REPLAYED = scaled(20, 300)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_forged_and_replayed_macs_are_refused_or_absorbed_and_change_nothing(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    outcome = between_genuine_traffic(
        workers,
        lifecycle_env,
        broker,
        EVENTS,
        lambda rng, pool: [
            *forged_macs(
                rng, pool.genuine, rng.sample(pool.targets, min(10, len(pool.targets))), FORGED
            ),
            *replayed_macs(rng, pool.genuine, REPLAYED),
        ],
    )
    assert outcome.worker.process.poll() is None, outcome.worker.log()[-3000:]
    outcome.report.assert_holds()  # the targets' later uses: allowed, as the policy says
    assert outcome.report.republished >= REPLAYED
    forged = {
        row["event_id"]: row
        for row in ledger_rows(lifecycle_env)
        if row["event_id"].startswith("forged-mac-")
    }
    assert len(forged) == FORGED
    assert {(r["decision"], r["reason_code"]) for r in forged.values()} == {
        ("deny", "source_unauthenticated")
    }
    confirmed = {
        CODEC.decode("lifecycle.DeletionConfirmation", m.value())["request_id"]
        for m in read_all(broker, CONFIRMATIONS).messages
    }
    assert not {r for r in confirmed if r.startswith("FORGED-MAC-")}
