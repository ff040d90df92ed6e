"""Retention sweeps: shred data whose retention period (from the policy) has run out.

Two triggers, one mechanism (:meth:`DecisionStage.sweep`, run by the worker that owns the
subjects' state):
* ``lifecycle retention sweep [--as-of T]`` publishes one ``RetentionSweep`` record to each
  partition of ``privacy.retention-sweeps``; that topic is co-partitioned with
  ``customer.events``, so the worker owning partition *p* sweeps the subjects of *p*;
* a timer in every worker sweeps its own partitions as of now, every
  ``LIFECYCLE_RETENTION_INTERVAL`` seconds (default 3600); "now" is the runtime's injected
  :class:`~core.clock.Clock`, so a test sets it months ahead instead of waiting.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import faust

from core.logging import get_logger
from processors.decisions import DecisionStage
from processors.intake import fail_loudly
from streams import clients
from streams.codec import Codec
from streams.topics import CUSTOMER_EVENTS, RETENTION_SWEEPS

log = get_logger(__name__)


def request_sweep(
    client_config: dict[str, str], codec: Codec, partitions: int, as_of: datetime | None = None
) -> str:
    """Ask the workers to sweep every partition as of ``as_of`` (now); the sweep id."""
    sweep_id = f"sweep-{uuid.uuid4()}"
    record = {"sweep_id": sweep_id, "as_of": as_of or datetime.now(UTC), "requested_by": "cli"}
    value = codec.encode("lifecycle.RetentionSweep", record, RETENTION_SWEEPS)
    producer = clients.producer(client_config)
    for partition in range(partitions):
        producer.produce(RETENTION_SWEEPS, value, key=sweep_id.encode(), partition=partition)
    if producer.flush(30):
        raise RuntimeError("sweep request not acknowledged by the broker")
    return sweep_id


def register_retention(app: faust.App, stage: DecisionStage, codec: Codec) -> None:
    sweeps = app.topic(RETENTION_SWEEPS, key_type=bytes, value_type=bytes)
    interval = float(os.environ.get("LIFECYCLE_RETENTION_INTERVAL", "3600"))

    @app.agent(sweeps, name="lifecycle.retention")
    async def retention(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                request = codec.decode("lifecycle.RetentionSweep", event.value, RETENTION_SWEEPS)
                partition = event.message.partition
                swept = await stage.sweep(
                    request["as_of"], f"{request['sweep_id']}/{partition}", {partition}
                )
                log.info(
                    "retention.swept",
                    sweep_id=request["sweep_id"],
                    partition=partition,
                    subjects=swept,
                )
            except Exception as exc:
                fail_loudly("retention", exc)

    @app.timer(interval, on_leader=False)
    async def periodic_sweep() -> None:
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == CUSTOMER_EVENTS}
        if not owned:
            return
        now = stage.clock()
        sweep_id = f"timer-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"  # unique if time stands
        try:
            swept = await stage.sweep(now, sweep_id, owned)
        except Exception as exc:
            fail_loudly("retention timer", exc)
        if swept:
            log.info("retention.swept", sweep_id=sweep_id, subjects=swept)
