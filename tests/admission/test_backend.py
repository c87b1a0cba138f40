"""The admission backend contract, run against both implementations without Redis.

``SharedAdmission`` is built on the in-memory limiter, ledger and concurrency counter (the
same protocols its Redis parts implement), so its own logic — admitting limit and budget
together, undoing one when the other refuses, settling exactly once — runs with no socket.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from sluice.admission.backend import Hold
from sluice.admission.local import LocalAdmission
from sluice.admission.shared import SharedAdmission
from sluice.concurrency import Lease, MemoryConcurrency
from sluice.errors import InsufficientQuota, RateLimited
from sluice.keys import KeyRecord
from sluice.limits import MemoryRateLimiter
from sluice.metering.quota import LocalLedger, Reservation

Backend = LocalAdmission | SharedAdmission


def _key(**limits: Any) -> KeyRecord:
    values: dict[str, Any] = dict(
        id=uuid.uuid4().hex, name="k", key_hash="h", prefix="sk-x", budget_micro=None,
        spent_micro=0, expires_at=None, allowed_models=(), allowed_ips=(), rpm=None, tpm=None,
        disabled=False, created_at=0.0, last_used_at=None,
    )  # fmt: skip
    values.update(limits)
    return KeyRecord.build(**values)


def _clock() -> float:
    return 600.0  # the start of a minute: window loads are exact counts


def _local(
    ledger: LocalLedger | None = None, concurrency: MemoryConcurrency | None = None
) -> LocalAdmission:
    return LocalAdmission(MemoryRateLimiter(_clock), ledger or LocalLedger(), concurrency)


def _shared(
    ledger: LocalLedger | None = None, concurrency: MemoryConcurrency | None = None
) -> SharedAdmission:
    return SharedAdmission(
        MemoryRateLimiter(_clock), ledger or LocalLedger(), concurrency or MemoryConcurrency()
    )


BACKENDS: list[Callable[..., Backend]] = [_local, _shared]


@pytest.fixture(params=BACKENDS, ids=["local", "shared"])
def make(request: pytest.FixtureRequest) -> Callable[..., Backend]:
    maker: Callable[..., Backend] = request.param
    return maker


async def _tokens_in_window(backend: Backend, key: KeyRecord) -> int:
    """The key's tpm window load, read through the limiter (a zero-token admission)."""
    assert key.tpm is not None
    decision = await backend.limiter.admit(key.id, None, key.tpm, 0)
    return key.tpm - int(decision.headers["x-ratelimit-remaining-tokens"])


def _committed(backend: Backend, key: KeyRecord) -> int:
    ledger = backend.ledger
    assert isinstance(ledger, LocalLedger)
    return ledger.committed(key.id, key.spent_micro)


async def test_a_hold_settles_once_and_a_later_release_changes_nothing(
    make: Callable[..., Backend],
) -> None:
    backend = make()
    key = _key(tpm=10_000, budget_micro=1_000)
    hold = await backend.admit(key, "r1", 100, 300)
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (300, 100)
    await backend.settle(hold, 200, 40)
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (200, 40)
    await backend.settle(hold, 200, 40)
    await backend.release(hold)
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (200, 40)
    assert await backend.ledger.spent(key.id, 0) == 200


async def test_release_gives_everything_back_once(make: Callable[..., Backend]) -> None:
    backend = make()
    key = _key(tpm=10_000, budget_micro=1_000, max_concurrent=1)
    hold = await backend.admit(key, "r1", 100, 300)
    await backend.release(hold)
    await backend.release(hold)
    await backend.settle(hold, 500, 500)  # too late: the hold was given back
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (0, 0)
    again = await backend.admit(key, "r2", 100, 300)  # the slot is free again
    assert again.lease is not None


async def test_a_budget_refusal_leaves_nothing_held(make: Callable[..., Backend]) -> None:
    backend = make()
    key = _key(tpm=10_000, budget_micro=1_000, max_concurrent=1)
    with pytest.raises(InsufficientQuota):
        await backend.admit(key, "r1", 100, 1_001)
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (0, 0)
    hold = await backend.admit(key, "r2", 100, 1_000)  # the whole budget and the one slot
    assert hold.lease is not None and _committed(backend, key) == 1_000


async def test_an_rpm_refusal_leaves_nothing_held_and_is_remembered(
    make: Callable[..., Backend],
) -> None:
    backend = make()
    key = _key(rpm=1, tpm=10_000, budget_micro=1_000, max_concurrent=1)
    first = await backend.admit(key, "r1", 100, 300)
    await backend.settle(first, 300, 100)
    with pytest.raises(RateLimited) as refused:
        await backend.admit(key, "r2", 100, 300)
    assert "requests per minute" in refused.value.message
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (300, 100)
    lease = await backend.concurrency.acquire(key.id, 1, "probe")  # no slot stayed taken
    assert lease is not None
    with pytest.raises(RateLimited):  # its next request is refused before its body is read
        backend.refuse_early(key)


async def test_the_concurrency_slot_is_freed_by_settle_and_by_release(
    make: Callable[..., Backend],
) -> None:
    backend = make()
    key = _key(tpm=10_000, budget_micro=10_000, max_concurrent=1)
    hold = await backend.admit(key, "r1", 100, 300)
    with pytest.raises(RateLimited) as refused:
        await backend.admit(key, "r2", 100, 300)
    assert refused.value.code == "concurrency_limit_exceeded"
    # The refused request's budget and tokens were given back at once.
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (300, 100)
    await backend.settle(hold, 100, 50)
    second = await backend.admit(key, "r3", 100, 300)
    await backend.release(second)
    third = await backend.admit(key, "r4", 100, 300)
    assert third.lease is not None and not third.lease.released


async def test_keys_without_a_limit_get_the_default_cap(make: Callable[..., Backend]) -> None:
    backend = make()
    key = _key()
    assert (await backend.admit(key, "r1", 10, 0)).lease is None  # no cap configured
    backend.default_max_concurrent = 1
    hold = await backend.admit(key, "r2", 10, 0)
    assert hold.lease is not None and hold.lease.local
    with pytest.raises(RateLimited):
        await backend.admit(key, "r3", 10, 0)
    await backend.settle(hold, 0, 10)
    await backend.admit(key, "r4", 10, 0)


async def test_count_takes_only_an_rpm_slot(make: Callable[..., Backend]) -> None:
    backend = make()
    key = _key(rpm=2, tpm=10_000, budget_micro=1_000)
    await backend.count(key)
    await backend.count(key)
    with pytest.raises(RateLimited):
        await backend.count(key)
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (0, 0)
    with pytest.raises(RateLimited):  # remembered: refused before the next body is read
        backend.refuse_early(key)


class _SlowRelease(MemoryConcurrency):
    """Gives the slot back, then waits (as a shared counter's reply would)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def release(self, lease: Lease) -> None:
        await super().release(lease)
        self.waiting.set()
        await asyncio.sleep(10)


class _SlowLedger(LocalLedger):
    """Settles, then waits (as a shared ledger's script reply would)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()
        self.settlements = 0

    async def settle(self, reservation: Reservation, actual: int) -> None:
        if not reservation.settled:
            self.settlements += 1
        await super().settle(reservation, actual)
        self.waiting.set()
        await asyncio.sleep(10)


async def _cancel_when(task: asyncio.Task[None], waiting: asyncio.Event) -> None:
    await asyncio.wait_for(waiting.wait(), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("make_backend", BACKENDS, ids=["local", "shared"])
async def test_cancelled_while_the_slot_goes_back_the_counters_still_settle(
    make_backend: Callable[..., Backend],
) -> None:
    concurrency = _SlowRelease()
    backend = make_backend(concurrency=concurrency)
    key = _key(tpm=10_000, budget_micro=1_000, max_concurrent=1)
    hold = await backend.admit(key, "r1", 100, 300)
    settling = asyncio.ensure_future(backend.settle(hold, 120, 30))
    await _cancel_when(settling, concurrency.waiting)
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (120, 30)
    await backend.settle(hold, 120, 30)  # the hold was claimed: nothing happens twice
    assert await backend.ledger.spent(key.id, 0) == 120
    assert await backend.concurrency.acquire(key.id, 1, "probe") is not None


async def test_shared_settlement_cancelled_mid_script_finishes_both_counters() -> None:
    ledger = _SlowLedger()
    backend = _shared(ledger=ledger)
    key = _key(tpm=10_000, budget_micro=1_000)
    hold = await backend.admit(key, "r1", 100, 300)
    settling = asyncio.ensure_future(backend.settle(hold, 120, 30))
    await _cancel_when(settling, ledger.waiting)
    # The token window's correction ran although the caller was cancelled meanwhile.
    assert (_committed(backend, key), await _tokens_in_window(backend, key)) == (120, 30)
    ledger.waiting.clear()
    await asyncio.wait_for(backend.settle(hold, 120, 30), 1.0)  # claimed: returns at once
    assert ledger.settlements == 1 and not ledger.waiting.is_set()


def test_holds_say_whether_settling_them_waits_for_io() -> None:
    async def admitted(backend: Backend) -> Hold:
        return await backend.admit(_key(), "r1", 10, 0)

    # In-process counters settle without suspending; shared ones (admitted exactly, not from
    # an allowance) need round trips, so the relay settles them off the response path.
    assert asyncio.run(admitted(_local())).waits is False
    assert asyncio.run(admitted(_shared())).waits is True


def test_a_hold_is_claimed_once() -> None:
    hold = Hold(_key(), Reservation("k", 5), 10, None, {}, waits=False)
    assert hold.amount == 5
    assert hold.claim() is True
    assert hold.claim() is False and hold.done
