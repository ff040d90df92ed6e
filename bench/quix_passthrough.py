"""A bare Quix Streams pass-through application: every record of ``customer.events`` is
produced unchanged to the pass-through topic (the second baseline of ``decide``).

Runs in its own virtual environment (:mod:`bench.quix_env`): Quix Streams pins an older
confluent-kafka than the pipeline's, so it imports nothing of the project. Prints ``FIRST``
on stdout when the first record was processed (the records are all on the topic before it
starts, so the benchmark takes its CPU from there), and runs until SIGTERM.

Each record leaves stamped with the time it was forwarded, as the Faust workers' outputs are:
Quix Streams would otherwise give it the timestamp of the record it read, and the benchmark's
rate, taken from the output's timestamps, would be the rate those were published at.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from quixstreams import Application

SOURCE = "customer.events"
PASSTHROUGH = "bench.passthrough"


def main() -> None:
    seen = False

    def processed(_topic: str, _partition: int, _offset: int) -> None:
        nonlocal seen
        if not seen:
            seen = True
            print("FIRST", flush=True)

    app = Application(
        broker_address=os.environ["KAFKA_BOOTSTRAP"],
        consumer_group=sys.argv[1] if len(sys.argv) > 1 else "bench-quix",
        auto_offset_reset="earliest",
        consumer_extra_config={"session.timeout.ms": 6000},  # as the Faust workers' 6 s
        producer_extra_config={"linger.ms": 5},  # as the Faust workers' producer_linger
        use_changelog_topics=False,
        auto_create_topics=False,
        on_message_processed=processed,
        loglevel="WARNING",
    )
    source = app.topic(SOURCE, key_deserializer="bytes", value_deserializer="bytes")
    out = app.topic(PASSTHROUGH, key_serializer="bytes", value_serializer="bytes")

    def forwarded_now(_value: Any, _key: Any, _timestamp: int, _headers: Any) -> int:
        return time.time_ns() // 1_000_000

    app.dataframe(source).set_timestamp(forwarded_now).to_topic(out)
    app.run()


if __name__ == "__main__":
    main()
