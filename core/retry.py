"""Retrying work that failed for a reason outside it (a database or a registry down, a broker's
queue full, a file another process holds), waiting longer after each failure.

One helper, on tenacity, for every place that backs off. A caller says which errors are worth
another attempt, the first and the longest wait, and when to give up: never, once the waits
add up to ``patience`` seconds, once ``within`` seconds have passed since the first attempt, or
when ``stop`` is set. ``notice`` hears each failure and the wait before the next attempt (for a
log line). Giving up re-raises the last error; an error not worth retrying is raised at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypedDict, TypeVar

import tenacity

T = TypeVar("T")

Retryable = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""Exception types worth another attempt, or a test of the exception."""
Notice = Callable[[BaseException, float], None]
"""Called after a failed attempt with its error and the seconds until the next attempt."""


class _Policy(TypedDict):
    retry: tenacity.retry_base
    wait: tenacity.wait.wait_base
    stop: Callable[[tenacity.RetryCallState], bool]
    before_sleep: Callable[[tenacity.RetryCallState], None]
    reraise: bool


def _policy(
    on: Retryable,
    first: float,
    most: float,
    patience: float | None,
    within: float | None,
    stop: threading.Event | None,
    notice: Notice | None,
) -> _Policy:
    def give_up(state: tenacity.RetryCallState) -> bool:
        return (
            (patience is not None and state.idle_for >= patience)
            or (within is not None and (state.seconds_since_start or 0.0) >= within)
            or (stop is not None and stop.is_set())
        )

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if notice is not None and error is not None:
            notice(error, state.upcoming_sleep)

    retry: tenacity.retry_base = (
        tenacity.retry_if_exception_type(on)
        if isinstance(on, type | tuple)
        else tenacity.retry_if_exception(on)
    )
    return {
        "retry": retry,
        "wait": tenacity.wait_exponential(multiplier=first, min=first, max=most),
        "stop": give_up,
        "before_sleep": before_sleep,
        "reraise": True,
    }


def retry_call(
    work: Callable[[], T],
    *,
    on: Retryable,
    first: float,
    most: float,
    patience: float | None = None,
    within: float | None = None,
    stop: threading.Event | None = None,
    notice: Notice | None = None,
    sleep: Callable[[float], object] | None = None,
) -> T:
    """``work()``, attempted again after each failure that ``on`` accepts (see the module).

    The waits double from ``first`` up to ``most`` seconds. They block the calling thread
    (``time.sleep``), or end early when ``stop`` is set, or are spent in ``sleep`` (a
    producer's ``poll``, which serves deliveries while it waits)."""
    wait = sleep if sleep is not None else time.sleep if stop is None else stop.wait

    def pause(seconds: float) -> None:
        wait(seconds)

    retrying = tenacity.Retrying(
        sleep=pause, **_policy(on, first, most, patience, within, stop, notice)
    )
    return retrying(work)


async def retry_call_async(
    work: Callable[[], Awaitable[T]],
    *,
    on: Retryable,
    first: float,
    most: float,
    patience: float | None = None,
    notice: Notice | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """:func:`retry_call` from a coroutine: ``work()`` and the waits (``sleep``) are awaited,
    so the event loop runs meanwhile."""
    retrying = tenacity.AsyncRetrying(
        sleep=sleep, **_policy(on, first, most, patience, None, None, notice)
    )
    async for attempt in retrying:
        with attempt:
            return await work()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
