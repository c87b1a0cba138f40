"""Run two coroutines together with one task instead of ``asyncio.gather``'s two.

Admission and settlement each start two Redis scripts that must be issued in the same event
loop turn to share one pipelined round trip. ``gather`` wraps both in tasks; here the second
becomes a task (its first step is scheduled before the batch is sent) and the first runs in the
caller's task. Both always run to the end, and each result or exception is returned, as with
``gather(..., return_exceptions=True)`` — so a hold made by one is never lost because the
other failed, nor because the caller was cancelled meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["both_settled"]

A = TypeVar("A")
B = TypeVar("B")


async def both_settled(
    first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]
) -> tuple[A | BaseException, B | BaseException]:
    other = asyncio.ensure_future(second)
    try:
        a: A | BaseException = await first
    except BaseException as exc:  # noqa: BLE001 - handed back, as gather(return_exceptions)
        a = exc
    try:
        b: B | BaseException = await asyncio.shield(other)
    except asyncio.CancelledError as cancelled:
        # Cancelled while the second runs: it is not cancelled with us (gather would cancel
        # it, and a budget hold its script already made in Redis would then never be undone).
        # It gets one more wait — bounded by the Redis reply watchdog — so the caller can undo
        # what it did; the cancellation is handed back in place of the first result, for the
        # caller to re-raise after its clean-up.
        a = cancelled
        b = await _outcome_of(other)
    except BaseException as exc:  # noqa: BLE001
        b = exc
    # Cancelled while the first ran: the first's CancelledError is returned the same way.
    return a, b


async def _outcome_of(task: asyncio.Future[B]) -> B | BaseException:
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError as again:  # cancelled twice: stop waiting
        task.cancel()
        return again
    if task.cancelled():
        return asyncio.CancelledError()
    error = task.exception()
    return error if error is not None else task.result()
