"""The Faust application: one per worker process, all in one consumer group.

Settings that matter on the bus:
* ``broker_session_timeout=6``: a group join on the embedded broker takes a few seconds
  instead of several times that with the default.
* in-memory table store: tables are rebuilt from their changelog topics after a restart.
* ``producer_linger=0.005``: Faust's default (0) sends a produce request per record while the
  sender is idle; 5 ms of linger batches them (more events a second through every stage, see
  the benchmarks), for 5 ms more latency a hop.
* ``producer_partitioner``: aiokafka's default partitioner, but with the keys' murmur2 hashes
  remembered (:func:`streams.topics.key_partitioner`): every table update computed it in
  Python for the changelog's partition.
* topics read below Faust (``LifecycleApp.read_apart``, the intake's ``customer.events``):
  the consumer subscribes to them, so the group's assignment co-partitions them with the
  tables, but pauses them in aiokafka on every assignment, so Faust's fetcher never delivers
  their records; the intake reads them itself (:mod:`processors.intake`).
* table recovery reads each changelog to the end a fetch reports (:mod:`streams.offsets`), not
  to the ListOffsets answer, which the embedded broker gives short by up to a record batch:
  with that answer a restarted or rebalanced worker would rebuild its tables without their
  last updates and deny genuine uses ``not_collected``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
import structlog
from aiokafka import TopicPartition
from confluent_kafka import KafkaException
from faust.transport.drivers import aiokafka as _faust_kafka
from faust.types import TP

from core.settings import Settings
from streams import clients
from streams.offsets import end_offsets
from streams.partitioning import key_partitioner
from streams.security import faust_credentials as _faust_credentials

APP_ID = "lifecycle"

log = structlog.get_logger(__name__)


class _ConsumerThread(_faust_kafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer thread, with changelog ends read the way a fetch sees them and the
    fetch wait of ``LIFECYCLE_FETCH_WAIT_MS`` (Faust fixes it at 1,500 ms, which the embedded
    broker holds for most of its length even when records arrive).

    The intake does not rely on Faust's offset tracking, which a short wait makes less
    dependable after partitions move: see :mod:`processors.progress`."""

    async def on_partitions_assigned(self, assigned: Iterable[TP], generation_id: int = 0) -> None:
        # in the consumer's own thread, before Faust hears of the assignment: aiokafka then
        # never fetches these partitions (Faust resumes only its own view of them)
        apart = getattr(self.app, "read_apart", ())
        held = [TopicPartition(tp.topic, tp.partition) for tp in assigned if tp.topic in apart]
        if held:
            self._ensure_consumer().pause(*held)
        await super().on_partitions_assigned(assigned, generation_id)

    def verify_event_path(self, now: float, tp: TP) -> None:
        # a paused partition is never fetched: not a slow stream
        if tp.topic not in getattr(self.app, "read_apart", ()):
            super().verify_event_path(now, tp)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "lifecycle_fetch_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms  # read when the consumer starts its fetcher
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed: Mapping[TP, int] = await super()._highwaters(partitions)
        config: dict[str, str] | None = getattr(self.app, "lifecycle_client_config", None)
        if not config or not partitions:
            return listed
        try:
            ends = await asyncio.to_thread(
                end_offsets, config, [(tp.topic, tp.partition) for tp in partitions]
            )
        except KafkaException as exc:
            log.warning("end offsets unavailable, using the broker's listing", error=str(exc))
            return listed
        return {
            tp: max(listed.get(tp) or 0, ends.get((tp.topic, tp.partition), 0)) for tp in partitions
        }


class _Consumer(_faust_kafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(_faust_kafka.Transport):  # type: ignore[misc]
    Consumer = _Consumer


class LifecycleApp(faust.App):  # type: ignore[misc]
    """``faust.App`` whose consumer finds partition ends with :func:`streams.offsets.end_offsets`
    (``lifecycle_client_config`` is the librdkafka configuration it uses for that), and leaves
    the records of :meth:`read_below` topics to whoever reads them."""

    lifecycle_client_config: dict[str, str] | None = None
    lifecycle_fetch_wait_ms: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_apart: set[str] = set()
        self._before_stop: list[Callable[[], Awaitable[None]]] = []

    def read_below(self, topic: str, before_stop: Callable[[], Awaitable[None]]) -> None:
        """Subscribe the group to ``topic`` (its partitions are assigned with the tables'),
        but never fetch its records: a reader of the caller's does, and ``before_stop`` is
        awaited when the app stops, while the consumer is still in the group (for a last
        commit)."""
        self.read_apart.add(topic)
        self._before_stop.append(before_stop)

    async def on_start(self) -> None:
        await super().on_start()
        for topic in sorted(self.read_apart):  # before the consumer starts, as agents do
            self.topics.add(self.topic(topic, key_type=bytes, value_type=bytes, acks=False))

    async def on_stop(self) -> None:
        for hook in self._before_stop:
            await hook()
        await super().on_stop()

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def _replication_of_the_bus(settings: Settings) -> int:
    """The replication factor the broker gave ``customer.events`` (its default, when
    LIFECYCLE_REPLICATION is not set), for the topics Faust creates (table changelogs): Faust's
    client cannot ask for "the broker's default" (-1 needs CreateTopics v4; it speaks v3)."""
    from streams.topics import CUSTOMER_EVENTS

    try:
        admin = clients.admin(settings.kafka_client_config())
        metadata = admin.list_topics(CUSTOMER_EVENTS, timeout=10)
        partitions = metadata.topics[CUSTOMER_EVENTS].partitions.values()
        return max((len(p.replicas) for p in partitions), default=1) or 1
    except (KafkaException, KeyError) as exc:
        log.warning("replication.unknown", topic=CUSTOMER_EVENTS, error=str(exc), assumed=1)
        return 1


def create_app(settings: Settings, *, app_id: str | None = None, **overrides: Any) -> faust.App:
    bootstrap = settings.kafka_client_config()["bootstrap.servers"]
    security = settings.kafka_security
    conf: dict[str, Any] = {
        "broker": [f"kafka://{host}" for host in bootstrap.split(",")],
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
        "store": "memory://",
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.replication or _replication_of_the_bus(settings),
        "topic_allow_declare": True,
        "table_standby_replicas": 0,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_linger": 0.005,
        "producer_partitioner": key_partitioner,
        "web_enabled": False,
        "datadir": str(settings.data_dir / "faust"),
        "key_serializer": "raw",
        "value_serializer": "raw",
        "stream_wait_empty": False,
    }
    if security.get("security.protocol", "PLAINTEXT").upper() != "PLAINTEXT":
        conf["broker_credentials"] = _faust_credentials(security)
    conf.update(overrides)
    app = LifecycleApp(app_id or os.environ.get("LIFECYCLE_APP_ID", APP_ID), **conf)
    # with the consumers' short fetch wait: reading to a changelog's end ends with a fetch
    # at the end, which the embedded broker holds for the whole wait
    app.lifecycle_client_config = settings.kafka_consumer_config()
    app.lifecycle_fetch_wait_ms = settings.fetch_wait_ms
    return app
