"""Worker allowances against a real Redis: busy keys are admitted without a round trip per
request, and no limit or budget is ever exceeded across replicas because of it."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
import redis.asyncio as redis
from redis.commands.core import AsyncScript

from sluice.admission.shared import SharedAdmission
from sluice.errors import InsufficientQuota, RateLimited
from sluice.keys import KeyRecord
from sluice.limits import LimitDecision
from sluice.metering.quota import Reservation
from sluice.redis_backend.allowance import AllowancePolicy, Allowances, allowance_from_reply
from sluice.redis_backend.client import RedisBackend
from sluice.redis_backend.concurrency import RedisConcurrency
from sluice.redis_backend.ledger import RedisLedger
from sluice.redis_backend.limiter import RedisRateLimiter
from tests.scale.conftest import PrivateRedis, wait_until


def _key(**limits: Any) -> KeyRecord:
    values: dict[str, Any] = dict(
        id=uuid.uuid4().hex, name="k", key_hash="h", prefix="sk-x", budget_micro=None,
        spent_micro=0, expires_at=None, allowed_models=(), allowed_ips=(), rpm=None, tpm=None,
        disabled=False, created_at=0.0, last_used_at=None,
    )  # fmt: skip
    values.update(limits)
    return KeyRecord.build(**values)


@dataclass
class Replica:
    """What admission needs of a worker's state with Redis: limiter, ledger, allowances."""

    backend: RedisBackend
    ledger: RedisLedger
    limiter: RedisRateLimiter
    allowances: Allowances
    script_calls: int = 0

    @property
    def state(self) -> SharedAdmission:
        concurrency = RedisConcurrency(self.backend, 960.0)
        return SharedAdmission(self.limiter, self.ledger, concurrency, self.allowances)

    async def admit(
        self, key: KeyRecord, tokens: int, cost: int
    ) -> tuple[LimitDecision, Reservation] | None:
        """The gateway's own admission step; None when it answers 429."""
        try:
            return await self.state._limit_and_reserve(key, tokens, cost)
        except (RateLimited, InsufficientQuota):
            return None

    async def settle(self, key: KeyRecord, reservation: Reservation, actual: int) -> None:
        await self.ledger.settle(reservation, actual)

    def count_scripts(self) -> None:
        original = self.backend.script

        async def counted(script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
            self.script_calls += 1
            return await original(script, keys, args)

        self.backend.script = counted  # type: ignore[method-assign]


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[Callable[..., Any]]:
    made: list[Replica] = []

    async def make(policy: AllowancePolicy | None = None, spent: int = 0) -> Replica:
        backend = RedisBackend(redis_url)
        await backend.start()

        async def load_spent(_: str) -> int:
            return spent

        ledger = RedisLedger(backend, load_spent)
        allowances = Allowances(backend, ledger, policy)
        allowances.start()
        replica = Replica(backend, ledger, RedisRateLimiter(backend), allowances)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.allowances.close()
        await replica.backend.close()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def _counters(client: redis.Redis, key_id: str) -> dict[str, dict[str, str]]:
    tag = f"{{sluice:key:{key_id}}}"
    return {
        name: await client.hgetall(f"{tag}:{name}")  # type: ignore[misc]
        for name in ("budget", "rpm", "tpm")
    }


async def _quiet_minute() -> None:
    """Window counts are compared exactly: keep a test inside one Redis minute."""
    if time.time() % 60 > 50:
        await asyncio.sleep(60.5 - time.time() % 60)


async def _until_held(replica: Replica, key: KeyRecord) -> None:
    assert await wait_until(lambda: key.id in replica.allowances._held, 2.0, 0.005)


async def test_a_busy_key_is_admitted_locally_and_counted_when_granted(
    replicas: Callable[..., Any], raw_redis: redis.Redis
) -> None:
    await _quiet_minute()
    replica = await replicas()
    key = _key(rpm=100_000, tpm=10_000_000, budget_micro=10_000_000)
    for _ in range(2):  # the second exact admission within a second asks for an allowance
        assert await replica.admit(key, 50, 100) is not None
    await _until_held(replica, key)
    granted = replica.allowances._held[key.id].size
    counters = await _counters(raw_redis, key.id)
    assert int(counters["rpm"]["cur"]) == 2 + granted  # counted in full when granted
    assert int(counters["tpm"]["cur"]) == 50 * (2 + granted)
    assert int(counters["budget"]["reserved"]) == 100 * (2 + granted)

    replica.count_scripts()
    remaining: list[int] = []
    for _ in range(granted // 2):
        admitted = await replica.admit(key, 50, 100)
        assert admitted is not None
        remaining.append(int(admitted[0].headers["x-ratelimit-remaining-requests"]))
    assert replica.script_calls == 0  # no Redis round trip for any of them
    # The headers count only the slots used, not the whole grant.
    assert remaining == list(range(100_000 - 3, 100_000 - 3 - granted // 2, -1))
    assert (await _counters(raw_redis, key.id))["rpm"] == counters["rpm"]


async def test_settling_and_giving_back_leave_exact_counters(
    replicas: Callable[..., Any], raw_redis: redis.Redis
) -> None:
    await _quiet_minute()
    replica = await replicas()
    key = _key(rpm=100_000, tpm=10_000_000, budget_micro=10_000_000)
    held = [await replica.admit(key, 50, 100) for _ in range(2)]
    await _until_held(replica, key)
    held += [await replica.admit(key, 50, 100) for _ in range(5)]
    reservations = [r[1] for r in held if r is not None]
    assert len(reservations) == 7
    lease = replica.allowances._held[key.id].lease_id
    replica.allowances.key_changed(key.id)  # gives the unused part back
    assert replica.allowances.take(key, 50, 100) is None
    assert await wait_until(lambda: not replica.allowances._tasks, 2.0, 0.005)
    counters = await _counters(raw_redis, key.id)
    assert int(counters["rpm"]["cur"]) == 7
    assert int(counters["tpm"]["cur"]) == 7 * 50
    assert int(counters["budget"]["reserved"]) == 7 * 100  # the in-flight requests' estimates
    assert int(counters["budget"][f"l:{lease}"]) == 5 * 100
    for reservation in reservations:  # settled after the lease went back
        await replica.settle(key, reservation, 80)
    counters = await _counters(raw_redis, key.id)
    assert int(counters["budget"]["reserved"]) == 0
    assert int(counters["budget"]["spent"]) == 7 * 80
    assert f"l:{lease}" not in counters["budget"]
    tag = f"{{sluice:key:{key.id}}}"
    assert await raw_redis.zcard(f"{tag}:leases") == 0


async def test_replicas_with_allowances_never_pass_the_rpm_limit(
    replicas: Callable[..., Any], raw_redis: redis.Redis
) -> None:
    await _quiet_minute()
    workers = [await replicas() for _ in range(3)]
    for worker in workers:
        worker.count_scripts()
    key = _key(rpm=600)
    admitted = [0, 0, 0]

    async def hammer(i: int) -> None:
        refused_in_a_row = 0
        while refused_in_a_row < 3:
            if await workers[i].admit(key, 10, 0) is None:
                refused_in_a_row += 1
            else:
                refused_in_a_row = 0
                admitted[i] += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(hammer(i) for i in range(3)))
    assert sum(admitted) <= 600
    assert all(n > 0 for n in admitted)
    # Exact admission alone costs two scripts a request (window and budget): allowances
    # admitted most of them with none.
    assert sum(w.script_calls for w in workers) < sum(admitted)
    for worker in workers:
        await worker.allowances.close()  # everything unused goes back
    counters = await _counters(raw_redis, key.id)
    assert int(counters["rpm"]["cur"]) == sum(admitted)  # no slot left counted but unused
    # Whatever the allowances held is admitted now, exactly up to the limit.
    last = await replicas()
    extra = 0
    while await last.admit(key, 10, 0) is not None:
        extra += 1
    assert sum(admitted) + extra == 600


async def test_replicas_with_allowances_never_pass_the_budget(
    replicas: Callable[..., Any], raw_redis: redis.Redis
) -> None:
    workers = [await replicas() for _ in range(3)]
    key = _key(budget_micro=1_000_000)
    in_flight: list[tuple[Replica, Reservation]] = []
    refused = [0, 0, 0]

    async def spend(i: int) -> None:
        while refused[i] < 3:
            admitted = await workers[i].admit(key, 10, 1_000)
            if admitted is None:
                refused[i] += 1
                continue
            in_flight.append((workers[i], admitted[1]))
            held = sum(r.amount for _, r in in_flight)
            assert held <= 1_000_000  # never more admitted than the budget covers
            await asyncio.sleep(0)

    await asyncio.gather(*(spend(i) for i in range(3)))
    for worker in workers:
        await worker.allowances.close()
    last = await replicas()
    while (admitted := await last.admit(key, 10, 1_000)) is not None:
        in_flight.append((last, admitted[1]))
    assert len(in_flight) == 1_000  # every request the budget covers, and not one more
    for worker, reservation in in_flight:
        await worker.settle(key, reservation, 1_000)
    counters = await _counters(raw_redis, key.id)
    assert int(counters["budget"]["spent"]) == 1_000_000
    assert int(counters["budget"]["reserved"]) == 0


async def test_an_exact_refusal_gives_this_workers_allowance_back_and_retries(
    replicas: Callable[..., Any],
) -> None:
    replica = await replicas()
    key = _key(budget_micro=1_000_000)
    for _ in range(2):
        assert await replica.admit(key, 10, 1_000) is not None
    await _until_held(replica, key)
    held = replica.allowances._held[key.id].budget
    assert held > 0
    # Fits the budget only if the allowance's hold is given back first.
    big = 1_000_000 - 2_000 - held // 2
    admitted = await replica.admit(key, 10, big)
    assert admitted is not None
    assert key.id not in replica.allowances._held


async def test_a_dead_workers_lease_is_reclaimed_after_its_ttl(
    replicas: Callable[..., Any],
) -> None:
    dead = await replicas(AllowancePolicy(lease_ttl_s=1.0))
    key = _key(budget_micro=1_000_000)
    for _ in range(2):
        assert await dead.admit(key, 10, 1_000) is not None
    await _until_held(dead, key)
    held = dead.allowances._held[key.id].budget
    dead.allowances._held.clear()  # dies: nothing is given back
    other = await replicas()
    whole_rest = 1_000_000 - 2_000
    assert await other.admit(key, 10, whole_rest) is None  # the dead worker's hold is in the way
    assert held > 0
    await asyncio.sleep(1.1)
    assert await other.admit(key, 10, whole_rest) is not None


async def test_a_changed_key_is_not_admitted_from_its_old_allowance(
    replicas: Callable[..., Any],
) -> None:
    replica = await replicas()
    key = _key(rpm=100_000)
    for _ in range(2):
        assert await replica.admit(key, 10, 0) is not None
    await _until_held(replica, key)
    assert replica.allowances.take(key, 10, 0) is not None
    lowered = replace(key, rpm=50_000)  # e.g. the key cache reloaded the record
    assert replica.allowances.take(lowered, 10, 0) is None
    assert key.id not in replica.allowances._held


async def test_a_key_near_its_limit_gets_no_allowance(
    replicas: Callable[..., Any],
) -> None:
    replica = await replicas()
    key = _key(rpm=60)  # 60 / 16 leaves fewer than min_requests (4) to grant
    for _ in range(10):
        assert await replica.admit(key, 10, 0) is not None
    await asyncio.sleep(0.05)
    assert key.id not in replica.allowances._held


def test_an_allowance_ends_with_the_window_it_was_counted_in() -> None:
    limits = (1000, None, None)
    reply = [20, 29_000_000, 59_950_000, 20, 0, 0, 0]  # granted 50 ms before the minute ends
    late = allowance_from_reply(reply, "lease", limits, (5, 7), 100.0, 1.0)
    assert late is not None
    assert late.usable_until == pytest.approx(100.05)
    early = allowance_from_reply([20, 1, 1_000_000, 20, 0, 0, 0], "x", limits, (5, 7), 0.0, 1.0)
    assert early is not None and early.usable_until == pytest.approx(1.0)
    assert (early.requests, early.tokens, early.budget) == (20, 100, 140)
    assert allowance_from_reply([0], "x", limits, (5, 7), 0.0, 1.0) is None


async def test_a_free_requests_reservation_settles(replicas: Callable[..., Any]) -> None:
    # A zero estimate (a model priced free) once made the settle script send HINCRBY "-0",
    # which Redis refuses: every free request's settlement failed.
    replica = await replicas()
    key = _key(budget_micro=1_000)
    decision, reservation = await replica.state._limit_and_reserve(key, 10, 0)
    await replica.settle(key, reservation, 0)
    assert await replica.ledger.spent(key.id, 0) == 0


async def test_settlements_of_leased_requests_are_sent_together_and_exactly(
    replicas: Callable[..., Any], raw_redis: redis.Redis
) -> None:
    await _quiet_minute()
    replica = await replicas(AllowancePolicy(settle_interval_s=0.2))
    key = _key(tpm=1_000_000, budget_micro=10_000_000)
    exact = [await replica.admit(key, 50, 100) for _ in range(2)]
    await _until_held(replica, key)
    leased = [await replica.admit(key, 50, 100) for _ in range(6)]
    assert all(r is not None and replica.allowances.leased(r[1]) for r in leased)
    assert not any(r is not None and replica.allowances.leased(r[1]) for r in exact)
    replica.count_scripts()
    for admitted in leased:
        assert admitted is not None
        replica.allowances.settle(admitted[1], 70, -20)  # used 30 of the 50 tokens reserved
        replica.allowances.settle(admitted[1], 70, -20)  # a second settle is a no-op
    assert replica.script_calls == 0  # nothing sent yet: one batch after the interval
    assert await wait_until(lambda: replica.script_calls == 1, 1.0, 0.01)
    assert await wait_until(lambda: not replica.allowances._tasks, 1.0, 0.01)
    counters = await _counters(raw_redis, key.id)
    assert int(counters["budget"]["spent"]) == 6 * 70
    granted = replica.allowances._held[key.id].size
    # Still held: the two exact requests' estimates and the allowance's unused part.
    assert int(counters["budget"]["reserved"]) == 2 * 100 + (granted - 6) * 100
    assert int(counters["tpm"]["cur"]) == 50 * (2 + granted) - 6 * 20


async def test_a_grant_arriving_after_close_is_given_back(
    replicas: Callable[..., Any], raw_redis: redis.Redis
) -> None:
    await _quiet_minute()
    replica = await replicas()
    key = _key(rpm=100_000)
    for _ in range(2):  # the second asks for an allowance; close before the grant lands
        assert await replica.admit(key, 10, 0) is not None
    assert key.id in replica.allowances._granting
    await replica.allowances.close()
    assert key.id not in replica.allowances._held
    counters = await _counters(raw_redis, key.id)
    assert int(counters["rpm"]["cur"]) == 2  # the late grant's slots went back


async def test_an_allowance_outlives_a_redis_outage_without_losing_track(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    spent_in_db = {"value": 0}

    async def load_spent(_: str) -> int:
        return spent_in_db["value"]

    backend = RedisBackend(private_redis.url, "open", probe_interval_s=0.1)
    await backend.start()
    ledger = RedisLedger(backend, load_spent)
    allowances = Allowances(backend, ledger, AllowancePolicy(lifetime_s=30.0))
    allowances.start()
    replica = Replica(backend, ledger, RedisRateLimiter(backend), allowances)
    key = _key(rpm=100_000, budget_micro=10_000_000)
    try:
        for _ in range(2):
            assert await replica.admit(key, 10, 100) is not None
        await _until_held(replica, key)
        private_redis.kill()
        with caplog.at_level(logging.ERROR):
            # Counted in Redis before it went away: still admitted, with no I/O.
            leased = [await replica.admit(key, 10, 100) for _ in range(3)]
            assert all(r is not None and allowances.leased(r[1]) for r in leased)
            for admitted in leased:
                assert admitted is not None
                allowances.settle(admitted[1], 90, 0)
            # The batch cannot be sent: the key's counter is marked stale, to be re-seeded.
            assert await wait_until(lambda: key.id in ledger._outage_keys, 2.0, 0.01)
            private_redis.start()
            assert await wait_until(lambda: backend.healthy, 5.0, 0.05)
            assert await wait_until(lambda: key.id not in allowances._held, 2.0, 0.01)
            spent_in_db["value"] = 2 * 100 + 3 * 90  # what the usage sink wrote meanwhile
            assert await replica.admit(key, 10, 100) is not None  # re-seeded from the database
            assert await ledger.spent(key.id, 0) == 470
        assert not [r for r in caplog.records if "allowance update failed" in r.getMessage()]
    finally:
        await allowances.close()
        await backend.close()
