"""Allowances: a worker admits a busy key's requests from a slice of its limits held in advance.

Exact admission costs every request a Redis round trip before the upstream is called, most of
the latency the gateway itself adds (figures: docs/architecture.md). A key that
this worker keeps admitting is instead granted an *allowance*: one atomic script counts N
requests, N × the request's tokens and N × its estimated cost against the key's windows and
budget at once, exactly as N admissions would, and the worker then admits up to N requests
locally with no I/O. Each request admitted this way settles like any other (its estimate comes
off the allowance's lease, its real cost goes to spent, its token estimate is corrected in the
window), so billing is unchanged.

Why limits still hold: everything an allowance can admit was counted in Redis when it was
granted, so replicas together never admit more than a key's rpm/tpm or budget. An allowance is
used only inside the window its requests were counted in, and only for ``lifetime_s``; what is
left is then given back (the window's count and the lease's hold drop by it). What this trades:
while a worker holds unused slots, other replicas see them as taken, so a key can be refused a
little before its limit. Each grant takes at most 1/``share_divisor`` of what is left of every
limit, and no allowance is granted once that is less than ``min_requests`` requests, so a key
near a limit (a 60 rpm key, a nearly spent budget) is admitted exactly, one request at a time.
A worker that dies holding an allowance holds its budget until the lease expires
(``lease_ttl_s``, longer than any request), when the next refused reservation reclaims it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from sluice.keys import KeyRecord
from sluice.limits import WINDOW_S, LimitDecision, WindowState
from sluice.metering.quota import Reservation
from sluice.redis_backend.allowance_scripts import GIVE_BACK, GRANT, SETTLE_BATCH
from sluice.redis_backend.budget_scripts import BUDGET_TTL_S, budget_keys
from sluice.redis_backend.client import RedisBackend, RedisUnavailable
from sluice.redis_backend.ledger import RedisLedger, RedisReservation
from sluice.redis_backend.limiter import rate_headers, window_keys

__all__ = ["Allowance", "AllowancePolicy", "Allowances", "allowance_from_reply"]

log = logging.getLogger("sluice.redis")

Limits = tuple[int | None, int | None, int | None]  # rpm, tpm, budget


@dataclass(frozen=True, slots=True)
class AllowancePolicy:
    lifetime_s: float = 1.0
    share_divisor: int = 16
    min_requests: int = 4
    first_requests: int = 16
    max_requests: int = 1024
    lease_ttl_s: float = 960.0
    settle_interval_s: float = 0.05


@dataclass(slots=True)
class Allowance:
    """What this worker may still admit for one key, and what it needs for the headers."""

    lease_id: str
    limits: Limits
    window: int  # the rate window its requests and tokens were counted in
    usable_until: float  # loop time: min(granted + lifetime, end of that window)
    granted_at: float
    size: int  # requests granted
    requests: int  # left to admit
    tokens: int
    budget: int
    elapsed_at_grant: float  # seconds into the window when Redis granted it
    request_window: WindowState  # counts as granted (unused slots included)
    token_window: WindowState
    used: int = 0

    def usable(self, key: KeyRecord, now: float) -> bool:
        """Still inside its time and window, and granted under the key's current limits."""
        return now < self.usable_until and self.limits == _limits_of(key)

    def covers(self, tokens: int, cost: int) -> bool:
        return self.requests > 0 and tokens <= self.tokens and cost <= self.budget

    def running_low(self, tokens: int, cost: int, now: float, lifetime_s: float) -> bool:
        return (
            self.requests * 4 <= self.size
            or self.tokens < 2 * tokens
            or self.budget < 2 * cost
            or self.usable_until - now < lifetime_s / 4
        )

    def headers(self, key: KeyRecord, now: float) -> dict[str, str]:
        """Limit headers as of the grant, counting only the slots used so far."""
        elapsed = min(self.elapsed_at_grant + (now - self.granted_at), WINDOW_S)
        headers: dict[str, str] = {}
        for kind, limit, granted, unused in (
            ("requests", key.rpm, self.request_window, self.requests),
            ("tokens", key.tpm, self.token_window, self.tokens),
        ):
            if limit is not None:
                used = WindowState(current=granted.current - unused, previous=granted.previous)
                headers.update(rate_headers(kind, limit, used, elapsed, 1))
        return headers


def allowance_from_reply(
    reply: list[Any],
    lease_id: str,
    limits: Limits,
    per_request: tuple[int, int],  # tokens, cost
    sent_at: float,
    lifetime_s: float,
) -> Allowance | None:
    """The allowance a GRANT reply describes; ``sent_at`` is the loop time the script was sent,
    which is no later than Redis read its clock, so the window's end computed from it is never
    later than the real one."""
    size = int(reply[0])
    if size <= 0:
        return None
    window, elapsed_us, rq_cur, rq_prev, tk_cur, tk_prev = (int(v) for v in reply[1:7])
    elapsed = elapsed_us / 1_000_000
    tokens, cost = per_request
    return Allowance(
        lease_id=lease_id,
        limits=limits,
        window=window,
        usable_until=sent_at + min(lifetime_s, WINDOW_S - elapsed),
        granted_at=sent_at,
        size=size,
        requests=size,
        tokens=size * tokens,
        budget=size * cost,
        elapsed_at_grant=elapsed,
        request_window=WindowState(window=window, current=rq_cur, previous=rq_prev),
        token_window=WindowState(window=window, current=tk_cur, previous=tk_prev),
    )


class Allowances:
    """This worker's allowances, one per busy key, granted and given back in the background."""

    def __init__(
        self, backend: RedisBackend, ledger: RedisLedger, policy: AllowancePolicy | None = None
    ) -> None:
        self._backend = backend
        self._ledger = ledger
        self.policy = policy or AllowancePolicy()
        self._held: dict[str, Allowance] = {}
        self._granting: dict[str, int] = {}  # key id -> epoch the grant was asked for in
        self._epochs: dict[str, int] = {}  # bumped when a key changes: grants in flight are void
        self._recent: dict[str, tuple[float, int]] = {}  # exact admissions: first seen, count
        self._quiet_until: dict[str, float] = {}  # a grant was refused: ask again after this
        # Settlements of requests admitted from a lease, added up until the next flush:
        # (key id, lease id) -> [estimates to release, real cost, token correction].
        self._unsettled: dict[tuple[str, str], list[int]] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._grant = backend.client.register_script(GRANT)
        self._give_back = backend.client.register_script(GIVE_BACK)
        self._settle_batch = backend.client.register_script(SETTLE_BATCH)
        backend.on_recovery(self._recovered)

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def close(self) -> None:
        """Give every allowance back (what is unused returns to the key at once)."""
        self._closing = True  # a grant still on its way is given back as it arrives
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._flush()
        for key_id in list(self._held):
            self._retire(key_id)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)

    def take(
        self, key: KeyRecord, tokens: int, cost: int
    ) -> tuple[LimitDecision, RedisReservation] | None:
        """Admit one request from the key's allowance, or None: admit it exactly instead."""
        allowance = self._held.get(key.id)
        if allowance is None:
            return None
        now = asyncio.get_running_loop().time()
        if not allowance.usable(key, now):
            self._retire(key.id)
            return None
        if not allowance.covers(tokens, cost):
            return None
        allowance.requests -= 1
        allowance.tokens -= tokens
        allowance.budget -= cost
        allowance.used += 1
        if allowance.running_low(tokens, cost, now, self.policy.lifetime_s):
            age = max(now - allowance.granted_at, 1e-3)
            self._ask(key, tokens, cost, allowance.used / age)
        reservation = RedisReservation(key_id=key.id, amount=cost, lease_id=allowance.lease_id)
        return LimitDecision(True, allowance.headers(key, now)), reservation

    @staticmethod
    def leased(reservation: Reservation) -> bool:
        """Whether the request was admitted from an allowance (and so settles here)."""
        return isinstance(reservation, RedisReservation) and reservation.lease_id is not None

    def settle(self, reservation: Reservation, actual: int, token_correction: int) -> None:
        """Settle a request admitted from an allowance, without waiting for Redis: it is added
        up with the lease's other settlements and sent within ``settle_interval_s``.

        Meanwhile the lease still holds the request's estimate, so the budget counter errs on
        the side of too much committed (unless the real cost exceeded the estimate, by at most
        that difference for one interval), and the token window keeps the reserved count."""
        if reservation.settled:
            return
        reservation.settled = True
        assert isinstance(reservation, RedisReservation) and reservation.lease_id is not None
        slot = (reservation.key_id, reservation.lease_id)
        pending = self._unsettled.get(slot)
        if pending is None:
            self._unsettled[slot] = [reservation.amount, actual, token_correction]
        else:
            pending[0] += reservation.amount
            pending[1] += actual
            pending[2] += token_correction
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self.policy.settle_interval_s, self._flush)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._unsettled = self._unsettled, {}
        for (key_id, lease_id), (estimates, actual, tokens) in batch.items():
            self._spawn(self._send_settlement(key_id, lease_id, [estimates, actual, tokens]))

    async def _send_settlement(self, key_id: str, lease_id: str, amounts: list[int]) -> None:
        keys = [*budget_keys(key_id), window_keys(key_id)[1]]
        await self._update(key_id, self._settle_batch, keys, [lease_id, *amounts])

    def admitted_exactly(self, key: KeyRecord, tokens: int, cost: int) -> None:
        """A request of this key was admitted by the exact path: if the key is busy on this
        worker (a second request within one lifetime), ask for an allowance."""
        now = asyncio.get_running_loop().time()
        seen = self._recent.get(key.id)
        if seen is None or now - seen[0] > self.policy.lifetime_s:
            self._recent[key.id] = (now, 1)
            return
        first, count = seen[0], seen[1] + 1
        self._recent[key.id] = (first, count)
        self._ask(key, tokens, cost, count / max(now - first, 1e-3))

    async def refused_exactly(self, key_id: str) -> bool:
        """The exact path refused a request: give this worker's allowance back first (it may be
        what is in the way). True when there was one, so the caller may try once more."""
        allowance = self._held.pop(key_id, None)
        if allowance is None:
            return False
        await self._return(key_id, allowance)
        return True

    def key_changed(self, key_id: str) -> None:
        """The key's limits, budget or spend changed: its allowance (and any grant on its way)
        no longer applies."""
        self._epochs[key_id] = self._epochs.get(key_id, 0) + 1
        self._retire(key_id)

    def _ask(self, key: KeyRecord, tokens: int, cost: int, rate_per_s: float) -> None:
        if key.id in self._granting:
            return
        loop = asyncio.get_running_loop()
        if self._quiet_until.get(key.id, 0.0) > loop.time():
            return
        policy = self.policy
        wanted = math.ceil(2 * rate_per_s * policy.lifetime_s)
        if key.id not in self._held:
            wanted = min(wanted, policy.first_requests)
        wanted = max(min(wanted, policy.max_requests), policy.min_requests)
        self._granting[key.id] = self._epochs.get(key.id, 0)
        self._spawn(self._obtain(key, tokens, cost, wanted))

    async def _obtain(self, key: KeyRecord, tokens: int, cost: int, wanted: int) -> None:
        loop = asyncio.get_running_loop()
        limits = _limits_of(key)
        lease_id = uuid.uuid4().hex[:16]
        policy = self.policy
        args = [
            *(-1 if limit is None else limit for limit in (key.budget_micro, key.rpm, key.tpm)),
            wanted,
            tokens,
            cost,
            policy.share_divisor,
            policy.min_requests,
            lease_id,
            policy.lease_ttl_s,
            BUDGET_TTL_S,
        ]
        sent_at = loop.time()
        try:
            reply = await self._backend.script(self._grant, _keys(key.id), args)
        except RedisUnavailable:
            reply = [0]
        finally:
            epoch = self._granting.pop(key.id, None)
        granted = allowance_from_reply(
            reply, lease_id, limits, (tokens, cost), sent_at, policy.lifetime_s
        )
        if granted is None:  # no room (or no Redis): exact admissions for a while
            self._quiet_until[key.id] = loop.time() + policy.lifetime_s
            return
        if self._closing or epoch != self._epochs.get(key.id, 0):  # too late to use it
            self._spawn(self._return(key.id, granted))
            return
        self._retire(key.id)
        self._held[key.id] = granted

    def _retire(self, key_id: str) -> None:
        allowance = self._held.pop(key_id, None)
        if allowance is not None:
            self._spawn(self._return(key_id, allowance))

    async def _return(self, key_id: str, allowance: Allowance) -> None:
        args = [
            allowance.lease_id,
            allowance.budget,
            allowance.requests,
            allowance.tokens,
            allowance.window,
        ]
        await self._update(key_id, self._give_back, _keys(key_id), args)

    async def _update(
        self, key_id: str, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> None:
        """A change to the key's counters made in the background; during an outage the counter
        is marked stale instead, to be re-seeded from the database when Redis returns."""
        try:
            await self._backend.script(script, keys, args)
        except RedisUnavailable:
            self._ledger.lost_update(key_id)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("allowance update failed", exc_info=task.exception())

    async def _sweep_loop(self) -> None:
        """Give back allowances of keys that went quiet; forget stale bookkeeping."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.policy.lifetime_s / 2)
            now = loop.time()
            for key_id, allowance in list(self._held.items()):
                if now >= allowance.usable_until:
                    self._retire(key_id)
            horizon = now - self.policy.lifetime_s
            self._recent = {k: v for k, v in self._recent.items() if v[0] > horizon}
            self._quiet_until = {k: t for k, t in self._quiet_until.items() if t > now}

    async def _recovered(self) -> None:
        # Counters touched during the outage were dropped and are re-seeded from the database;
        # an allowance's hold may have gone with them, so none granted before is trusted.
        for key_id in list(self._held):
            self._retire(key_id)


def _limits_of(key: KeyRecord) -> Limits:
    return key.rpm, key.tpm, key.budget_micro


def _keys(key_id: str) -> list[str]:
    return [*budget_keys(key_id), *window_keys(key_id)]
