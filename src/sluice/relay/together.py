"""Run two coroutines together with one task instead of ``asyncio.gather``'s two.

Admission and settlement each start two Redis scripts that must be issued in the same event
loop turn to share one pipelined round trip. ``gather`` wraps both in tasks; here the second
becomes a task (its first step is scheduled before the batch is sent) and the first runs in the
caller's task. Both always run to the end, and each result or exception is returned, as with
``gather(..., return_exceptions=True)`` — so a hold made by one is never lost because the
other failed.
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
        b: B | BaseException = await other
    except BaseException as exc:  # noqa: BLE001
        b = exc
    # Cancelled while the first ran: the first's CancelledError is returned (the caller
    # re-raises it after undoing what the second did); cancelled while waiting for the
    # second: that one is cancelled too, as gather would.
    return a, b
