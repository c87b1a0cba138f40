"""CPU-heavy work on large request bodies, run off the event loop.

Tokenising a body of megabytes takes the better part of a second; on the event loop it would
stall every other request of the worker (health checks included). Small bodies are handled
inline, where a thread hop would cost more than the work. Large ones go to a small executor of
this worker's own: not the loop's default executor, which aiohttp's DNS lookups share, so a
tenant sending many large bodies queues behind itself rather than delaying other requests'
upstream connections, and uses at most ``_THREADS`` cores for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["Offload", "OFFLOAD_MIN_BYTES"]

T = TypeVar("T")

# Below this a body is parsed, validated and counted inline: a few milliseconds of CPU at worst,
# not worth a thread hop on every ordinary request (figures: docs/architecture.md).
OFFLOAD_MIN_BYTES = 32 * 1024
_THREADS = 2


class Offload:
    """Runs a function inline for small inputs and in this worker's executor for large ones."""

    def __init__(self, min_bytes: int = OFFLOAD_MIN_BYTES) -> None:
        self.min_bytes = min_bytes
        self._executor: ThreadPoolExecutor | None = None  # started with the app

    def start(self) -> None:
        """Start the threads now: starting one waits for it to run, which under load (the
        threads busy with large bodies hold the GIL in turns) would stall the event loop."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="sluice-offload")
            for _ in range(_THREADS):
                self._executor.submit(time.sleep, 0.01)  # busy: the next submit starts another

    async def run(self, size: int, fn: Callable[[], T]) -> T:
        if size < self.min_bytes:
            return fn()
        if self._executor is None:
            self.start()
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
