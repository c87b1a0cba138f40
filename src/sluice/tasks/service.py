"""Submitting a task and ending one: the money of a task, from reservation to settlement.

Submit: the price is reserved through the admission backend like any request (budget, rpm and
the concurrency slot), the upstream is asked (failing over between channels like chat), and an
accepted task is written together with ``spent_micro += price`` (``TaskStore.insert_charged``);
then the hold is settled at that price, so the in-process or Redis budget counters hold it as
spend too. A refusal by every channel releases the hold: nothing is charged.

End: ``TaskStore.finish`` corrects the charge to the task's cost (the price on success, zero on
failure, cancellation or a stuck task) in the same transaction that makes the task final, and
the budget counters get the same correction. docs/tasks.md says why this design.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from sluice.core import UpstreamRequest, UsageTokens
from sluice.errors import PermissionDenied, ServiceUnavailable
from sluice.keys import KeyRecord
from sluice.metering.quota import Reservation
from sluice.providers.configs import TaskChannelConfig
from sluice.routing import Channel
from sluice.state import AppState
from sluice.tasks.callbacks import Notifier
from sluice.tasks.config import TasksConfig
from sluice.tasks.model import (
    Accepted,
    Snapshot,
    SubmitRefused,
    TaskRow,
    metered_units,
    new_task_id,
)
from sluice.tasks.protocol import Links, TaskProtocol
from sluice.tasks.store import Ending, TaskStore, usage_endpoint
from sluice.upstream import BodyTooLarge, UpstreamUnavailable, read_body

__all__ = ["Accepted", "Submission", "TaskService"]

log = logging.getLogger("sluice.tasks")

_DEFAULT_POLL_S = 5.0


@dataclass(slots=True)
class Submission:
    """One task a client asks for, with how to send it to a channel and read the answer."""

    key: KeyRecord
    kind: str
    action: str
    mode: str | None
    model: str  # the priced name
    request: dict[str, Any]  # kept on the task (prompt, notifyHook, ...)
    # (channel, Sluice's callback URL for the upstream or None) -> the UpstreamRequest
    build: Callable[[Channel, str | None], UpstreamRequest]
    parse: Callable[[int, bytes], Accepted | SubmitRefused]
    callback_url: str | None = None
    units: int = 1  # priced units: one call, or seconds of video
    pinned: str | None = None  # a follow-up (Midjourney action) goes to its parent's channel
    # The name the price is looked up by, when not ``model`` (videos: ``sora-2-1792x1024``).
    priced_as: str | None = None


def _health_key(sub: Submission) -> str:
    """The circuit a submission counts in: per channel and model for videos (like chat), per
    channel and kind for Midjourney and Suno (their channels serve no model names)."""
    return sub.model if sub.kind == "video" else sub.kind


class TaskService:
    def __init__(self, state: AppState, protocols: dict[str, TaskProtocol], secret: bytes) -> None:
        self.state = state
        self.store = TaskStore(state.engine)
        self.protocols = protocols
        self.secret = secret  # signs callbacks and proxied links
        self.owner = f"{secrets.token_hex(6)}"  # this replica, as lease owner
        self.notifier = Notifier(state.settings.tasks, secret)
        self._rng = random.Random()

    @property
    def config(self) -> TasksConfig:
        return self.state.settings.tasks

    # -- channels -------------------------------------------------------------------------

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.state.router.channels if c.name == name), None)

    def plan(self, kind: str, model: str | None = None) -> list[Channel]:
        """Channels running ``kind`` (serving ``model`` when given): higher priority first,
        weighted random within a tier, open circuits skipped."""
        health = self.state.health
        usable = [
            c
            for c in self.state.router.channels
            if kind in c.config.capabilities.task_kinds
            and (model is None or c.config.serves(model))
            and health.available(c.name, model or kind)
        ]
        ordered: list[Channel] = []
        for priority in sorted({c.config.priority for c in usable}, reverse=True):
            tier = [c for c in usable if c.config.priority == priority]
            while tier:
                weights = [max(c.config.weight, 0) for c in tier]
                pick = self._rng.choices(tier, weights)[0] if sum(weights) > 0 else tier[0]
                tier.remove(pick)
                ordered.append(pick)
        return ordered

    def poll_interval(self, channel: Channel | None) -> float:
        config = None if channel is None else channel.config
        if isinstance(config, TaskChannelConfig):
            return config.poll_interval_s
        return _DEFAULT_POLL_S

    def links(self, row: TaskRow, base: str | None) -> Links:
        channel = self.channel(row.channel)
        config = None if channel is None else channel.config
        proxy = isinstance(config, TaskChannelConfig) and config.proxy_results
        return Links(proxy=proxy, base=base or self.config.public_url, secret=self.secret)

    def render(self, row: TaskRow, base: str | None) -> dict[str, Any]:
        return self.protocols[row.kind].render(row, self.links(row, base))

    # -- price ----------------------------------------------------------------------------

    def price(
        self, key: KeyRecord, kind: str, model: str, units: int, priced_as: str | None = None
    ) -> int:
        if not key.allows_model(model):
            raise PermissionDenied(
                f"This API key is not allowed to use the model '{model}'.",
                param="model",
                code="model_not_allowed",
            )
        prices = self.state.prices
        rate = prices.find(priced_as or model) or prices.unpriced(model)
        return rate.cost(UsageTokens(units=metered_units(kind, units)))

    # -- submit ---------------------------------------------------------------------------

    async def submit(self, sub: Submission) -> TaskRow | SubmitRefused:
        amount = self.price(sub.key, sub.kind, sub.model, sub.units, sub.priced_as)
        task_id = new_task_id(sub.kind)
        hook_secret = secrets.token_hex(16)  # the upstream's callbacks for this task carry it
        if sub.pinned is not None:
            pinned = self.channel(sub.pinned)
            channels = [] if pinned is None else [pinned]
        else:
            channels = self.plan(sub.kind, sub.model if sub.kind == "video" else None)
        if not channels:
            raise ServiceUnavailable(
                f"No channel is available for {sub.kind} tasks right now.",
                code="no_available_channel",
            )
        hold = await self.state.admission.admit(sub.key, task_id, 0, amount)
        try:
            outcome = await self._first_accepting(channels, sub, task_id, hook_secret)
            if isinstance(outcome, SubmitRefused):
                return outcome
            channel, accepted = outcome
            row = self._new_row(task_id, sub, channel, accepted, amount)
            row.callback_secret = hook_secret
            interval = self.poll_interval(channel)
            await self.store.insert_charged(row, time.time() + interval)
            # The price is spend now (in the database, just written); the counters follow.
            await self.state.admission.settle(hold, amount, 0)
            return row
        finally:
            if not hold.done:
                await self.state.admission.release(hold)

    def upstream_hook(self, channel: Channel, task_id: str, hook_secret: str) -> str | None:
        """Where the upstream may call Sluice back about this task, if the channel wants it."""
        config, public = channel.config, self.config.public_url
        if not (isinstance(config, TaskChannelConfig) and config.upstream_callbacks and public):
            return None
        return f"{public.rstrip('/')}/tasks/callback/{task_id}/{hook_secret}"

    async def _first_accepting(
        self, channels: list[Channel], sub: Submission, task_id: str, hook_secret: str
    ) -> tuple[Channel, Accepted] | SubmitRefused:
        refused: SubmitRefused | None = None
        for channel in channels:
            try:
                request = sub.build(channel, self.upstream_hook(channel, task_id, hook_secret))
                response = await self.state.upstream.open(
                    request, self.state.timeouts_for(channel.config)
                )
                try:
                    body = await read_body(response, self.config.max_result_bytes)
                finally:
                    response.close()
            except (UpstreamUnavailable, BodyTooLarge, aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "task submit to channel %s failed: %s", channel.name, type(exc).__name__
                )
                self.state.health.record_failure(channel.name, _health_key(sub), "server")
                refused = SubmitRefused(503, "The upstream is unavailable.", retry=True)
                continue
            answer = sub.parse(response.status, body)
            if isinstance(answer, SubmitRefused):
                refused = answer
                if answer.retry:
                    continue
                return answer
            self.state.health.record_success(channel.name, _health_key(sub))
            return channel, answer
        return refused or SubmitRefused(503, "No channel accepted the task.", retry=True)

    def _new_row(
        self, task_id: str, sub: Submission, channel: Channel, accepted: Accepted, amount: int
    ) -> TaskRow:
        now = time.time()
        snapshot = accepted.snapshot
        return TaskRow(
            id=task_id,
            key_id=sub.key.id,
            kind=sub.kind,
            action=sub.action,
            mode=sub.mode,
            model=sub.model,
            channel=channel.name,
            upstream_id=accepted.upstream_id,
            state=snapshot.state,
            progress=snapshot.progress,
            request=sub.request,
            result=snapshot.result,
            fail_reason=snapshot.fail_reason,
            reserved_micro=amount,
            cost_micro=None,
            units=sub.units,
            created_at=now,
            updated_at=now,
            callback_url=sub.callback_url,
        )

    # -- progress and the end ---------------------------------------------------------------

    async def observe(
        self,
        row: TaskRow,
        snapshot: Snapshot,
        *,
        owner: str | None = None,
        ending: Ending | None = None,
    ) -> TaskRow | None:
        """Apply what the upstream said (a poll, a callback): record progress or end the task;
        the client's callback hears of every change. Returns the task as it now stands."""
        if ending is None and snapshot.final:
            ending = self.ending_for(row, snapshot)
        if ending is not None:
            ended = await self.store.finish(row, ending)
            if ended is None:
                return None  # someone else ended it: they settled and notified
            await self._correct_counters(ended)
            self._observe(ended, ending)
            self.notify(ended)
            return ended
        changed = (snapshot.state, snapshot.progress) != (row.state, row.progress)
        next_poll = None
        if owner is not None:
            next_poll = time.time() + self.poll_interval(self.channel(row.channel))
        if await self.store.progress(row.id, snapshot, next_poll_at=next_poll, owner=owner):
            updated = await self.store.get(row.id)
            if updated is not None and changed:
                self.notify(updated)
            return updated
        return None

    def ending_for(self, row: TaskRow, snapshot: Snapshot) -> Ending:
        if snapshot.state == "success":
            return Ending("success", row.reserved_micro, 200, None, snapshot)
        if snapshot.state == "cancelled":
            return Ending("cancelled", 0, 499, "task_cancelled", snapshot)
        return Ending("failure", 0, 502, "task_failed", snapshot)

    async def fail_stuck(self, row: TaskRow) -> TaskRow | None:
        limit = self.config.stuck_after_s.get(row.kind)
        snapshot = Snapshot(
            "failure",
            row.progress,
            row.result,
            f"The task did not finish within {limit:.0f}s; it was failed and not charged.",
        )
        ending = Ending("failure", 0, 504, "task_stuck", snapshot)
        return await self.observe(row, snapshot, ending=ending)

    async def _correct_counters(self, row: TaskRow) -> None:
        """The budget counters (this process's, or Redis's) get the correction the database
        just got: ``cost - reserved`` as spend on a reservation of nothing."""
        delta = (row.cost_micro or 0) - row.reserved_micro
        if delta:
            await self.state.ledger.settle(Reservation(row.key_id, 0), delta)

    def _observe(self, row: TaskRow, ending: Ending) -> None:
        """Metrics, as for relayed requests: a task counts once, when it ends, under its
        usage row's endpoint (``mj.imagine``), so task durations stay out of chat's latency."""
        self.state.metrics.observe_relay(
            endpoint=usage_endpoint(row),
            model=row.model,
            channel=row.channel,
            status=ending.status,
            latency_s=(row.finished_at or row.updated_at) - row.created_at,
            ttft_s=None,
            prompt=0,
            completion=0,
            cached=0,
            cost_micro=ending.cost_micro,
        )

    def notify(self, row: TaskRow) -> None:
        if not row.callback_url:
            return
        body = self.render(row, None)

        async def deliver() -> None:
            await self.notifier.deliver(row, body, self.store)

        self.state.spawn(deliver())
