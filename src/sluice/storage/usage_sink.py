"""Usage rows are appended to memory and written in batches, off the response path.

One flush is one transaction: a multi-row INSERT of the rows and one atomic
``spent = spent + ?`` UPDATE per key in the batch, sent through the driver itself
(``usage_writers.py``). Rows survive a database outage in a bounded
buffer and are written when it returns; ``close()`` flushes everything on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, fields

from sqlalchemy.exc import SQLAlchemyError

from sluice.storage.aio import AsyncEngine
from sluice.storage.usage_writers import driver_writer

__all__ = ["UsageRow", "UsageSink"]

log = logging.getLogger("sluice.usage")


# Not frozen: a frozen dataclass's __init__ pays an object.__setattr__ per field (~3x slower to
# build), and one row is built per request; nothing changes a row once settle() recorded it.
@dataclass(slots=True)
class UsageRow:
    request_id: str
    key_id: str
    endpoint: str
    model: str
    upstream_model: str | None
    channel: str | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_micro: int
    status: int
    error_code: str | None
    latency_ms: float
    ttft_ms: float | None
    stream: bool
    created_at: float
    # Metered units besides tokens (metering/pricing.py MeteredUnits); zero for chat.
    images: int = 0
    audio_seconds: int = 0
    characters: int = 0
    search_units: int = 0
    calls: int = 0
    video_seconds: int = 0

    @property
    def metered(self) -> bool:
        """Whether the row counts any unit besides tokens."""
        return bool(
            self.images
            or self.audio_seconds
            or self.characters
            or self.search_units
            or self.calls
            or self.video_seconds
        )


_ROW_FIELDS = tuple(f.name for f in fields(UsageRow))


class UsageSink:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        interval_s: float = 0.05,
        batch_rows: int = 500,
        buffer_rows: int = 100_000,
    ) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._batch_rows = batch_rows
        self._rows: deque[UsageRow] = deque()
        self._buffer_rows = buffer_rows
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.dropped = 0
        self.written = 0
        self._failing = False
        self._writer = driver_writer(engine, _ROW_FIELDS)

    @property
    def depth(self) -> int:
        return len(self._rows)

    def record(self, row: UsageRow) -> None:
        if len(self._rows) >= self._buffer_rows:
            # Bounded: the oldest row is lost and counted rather than the process running out
            # of memory during a long database outage.
            self._rows.popleft()
            self.dropped += 1
        self._rows.append(row)
        if len(self._rows) >= self._batch_rows:
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-sink")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._interval_s)
            except TimeoutError:
                pass
            self._wakeup.clear()
            await self.flush()
            if self._failing:
                await asyncio.sleep(1.0)

    async def flush(self) -> int:
        """Write everything queued now; returns the number of rows written."""
        # Shielded: a caller cancelled mid-commit (shutdown, client gone) must not leave rows
        # that were committed still queued, or they would be written and charged twice.
        return await asyncio.shield(self._flush_queued())

    async def _flush_queued(self) -> int:
        # Only the rows queued when the flush began: rows arriving while a batch commits wait
        # for the next tick, so under load the sink commits once per interval with a large
        # batch instead of chasing the queue with a stream of small transactions.
        written = 0
        async with self._flush_lock:
            todo = len(self._rows)
            while todo > 0 and self._rows:
                batch = [self._rows[i] for i in range(min(self._batch_rows, todo, len(self._rows)))]
                try:
                    await self._write(batch)
                except (SQLAlchemyError, OSError) as exc:
                    if not self._failing:
                        log.error("usage write failed, keeping %d rows: %s", len(self._rows), exc)
                    self._failing = True
                    return written
                if self._failing:
                    log.warning("usage writes recovered")
                    self._failing = False
                for _ in batch:
                    self._rows.popleft()
                written += len(batch)
                todo -= len(batch)
                self.written += len(batch)
        return written

    async def _write(self, batch: list[UsageRow]) -> None:
        spent: dict[str, int] = defaultdict(int)
        last_used: dict[str, float] = {}
        for row in batch:
            spent[row.key_id] += row.cost_micro
            last_used[row.key_id] = max(last_used.get(row.key_id, 0.0), row.created_at)
        await self._writer.write(batch, spent, last_used)

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        deadline = time.monotonic() + timeout_s
        while self._rows and time.monotonic() < deadline:
            await self.flush()
            if self._rows:
                await asyncio.sleep(0.2)
        if self._rows:
            log.error("shutdown: %d usage rows could not be written", len(self._rows))
