"""``lifecycle up`` for tests of time: a worker whose runtime clock stands at
``LIFECYCLE_TEST_NOW`` (ISO-8601), on the broker in ``KAFKA_BOOTSTRAP``.

Run as a script (``python tests/processors/clocked_worker.py``); it injects a
:class:`~core.clock.FixedClock` the way a deployment injects the system clock."""

from __future__ import annotations

import os
from datetime import datetime

from core.clock import FixedClock
from core.logging import configure_logging
from core.settings import load_settings
from lifecycle.runtime import Runtime
from lifecycle.worker import build_worker, run_worker


def main() -> None:
    configure_logging(os.environ.get("LIFECYCLE_LOG_LEVEL", "INFO"))
    clock = FixedClock(datetime.fromisoformat(os.environ["LIFECYCLE_TEST_NOW"]))
    runtime = Runtime(load_settings(), clock=clock).open()
    run_worker(build_worker(runtime))


if __name__ == "__main__":
    main()
