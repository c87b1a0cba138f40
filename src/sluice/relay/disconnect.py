"""Noticing a client that left while its response is being sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Message, Receive

__all__ = ["DisconnectWatch", "client_may_leave"]


class DisconnectWatch:
    """Cancels the streaming task when the client leaves, so a long wait for the upstream's
    next chunk ends at once (the upstream is then closed and stops generating).

    One plain future on ``receive()`` instead of Starlette's anyio task group with a listener
    task, which every streamed request would otherwise pay for (docs/architecture.md).
    """

    def __init__(self, task: asyncio.Task[Any], receive: Receive) -> None:
        self._task = task
        self._receive = receive
        self.closing = False  # the last body message is being sent: a disconnect is expected
        self.fired = False
        self._waiter = self._listen()

    def _listen(self) -> asyncio.Future[Message]:
        waiter = asyncio.ensure_future(self._receive())
        waiter.add_done_callback(self._on_message)
        return waiter

    def _on_message(self, waiter: asyncio.Future[Message]) -> None:
        if self.closing or waiter.cancelled() or waiter.exception() is not None:
            return
        if waiter.result().get("type") == "http.disconnect":
            self.fired = True
            self._task.cancel()
        else:  # more request body nobody asked for: keep listening
            self._waiter = self._listen()

    def stop(self) -> None:
        self.closing = True
        self._waiter.remove_done_callback(self._on_message)
        self._waiter.cancel()


@contextlib.asynccontextmanager
async def client_may_leave(receive: Receive) -> AsyncIterator[DisconnectWatch]:
    """Send a response's body inside this: a client that leaves cancels it, and that (or its
    socket failing mid-write) ends the response quietly; any other cancellation propagates."""
    task = asyncio.current_task()
    assert task is not None
    watch = DisconnectWatch(task, receive)
    try:
        yield watch
    except asyncio.CancelledError:
        if not watch.fired or task.uncancel() > 0:
            raise
    except OSError:
        pass  # the client socket went away mid-write
    finally:
        watch.stop()
