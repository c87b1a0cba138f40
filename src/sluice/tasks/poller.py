"""The poller: every replica claims due, unfinished tasks under a lease and advances them.

Each tick a replica claims at most ``tasks.batch`` due tasks whose lease is free or expired
(``TaskStore.claim_due``: a conditional UPDATE, so one replica wins each task), polls their
upstreams concurrently and gives each lease back with the task's next poll time. A replica that
dies mid-poll holds its leases until ``tasks.lease_s`` passes; another then claims those tasks
and, since ending a task is conditional too, none is settled twice.

A task older than its kind's ``tasks.stuck_after_s`` is failed and its charge refunded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from sluice.idle_backoff import IdleBackoff
from sluice.tasks.model import TaskRow
from sluice.tasks.service import TaskService
from sluice.upstream import BodyTooLarge, UpstreamUnavailable, read_body

__all__ = ["TaskPoller"]

log = logging.getLogger("sluice.tasks.poller")


class TaskPoller:
    def __init__(self, service: TaskService) -> None:
        self.service = service
        self.polls = 0  # upstream polls made by this replica (tests, metrics)
        self._stop = asyncio.Event()

    async def run_forever(self) -> None:
        backoff = IdleBackoff(self.service.config.tick_s)
        while not self._stop.is_set():
            try:
                found = await self.tick() > 0
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the poller outlives a bad tick (db outage)
                log.exception("task poller tick failed")
                found = True  # try again at the configured pace
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.after(found)):
                    await self._stop.wait()

    def stop(self) -> None:
        """End after the tick in flight: a tick cancelled mid-write could leave a pooled
        connection checked out while the engine is disposed (see key_watch.py)."""
        self._stop.set()

    async def tick(self) -> int:
        config = self.service.config
        rows = await self.service.store.claim_due(self.service.owner, config.lease_s, config.batch)
        if rows:
            outcomes = await asyncio.gather(
                *(self.advance(row) for row in rows), return_exceptions=True
            )
            for row, outcome in zip(rows, outcomes, strict=True):
                if isinstance(outcome, Exception):  # its lease expires; it is tried again
                    log.error("task %s: advancing it failed", row.id, exc_info=outcome)
        return len(rows)

    async def advance(self, row: TaskRow) -> None:
        service = self.service
        limit = service.config.stuck_after_s.get(row.kind)
        if limit is not None and row.age_s() > limit:
            await service.fail_stuck(row)
            return
        channel = service.channel(row.channel)
        interval = service.poll_interval(channel)
        if channel is None:  # removed from the config: wait for it (or the stuck limit)
            await service.store.reschedule(row.id, service.owner, time.time() + interval)
            return
        protocol = service.protocols[row.kind]
        try:
            # Well inside the lease: a poll still running when the lease expires could overlap
            # with another replica's.
            async with asyncio.timeout(service.config.lease_s / 2):
                request = protocol.poll_request(channel.config, row)
                response = await service.state.upstream.open(
                    request, service.state.timeouts_for(channel.config)
                )
                try:
                    body = await read_body(response, service.config.max_result_bytes)
                finally:
                    response.close()
            self.polls += 1
            snapshot = protocol.parse_poll(row, response.status, body)
        except (UpstreamUnavailable, BodyTooLarge, aiohttp.ClientError, TimeoutError) as exc:
            log.info("task %s: poll failed: %s", row.id, type(exc).__name__)
            snapshot = None
        if snapshot is None:
            await service.store.reschedule(row.id, service.owner, time.time() + interval)
            return
        await service.observe(row, snapshot, owner=service.owner)
