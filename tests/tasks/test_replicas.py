"""Several replicas on one PostgreSQL database: each task polled by one replica at a time, and a
replica that dies holding a task loses nothing: another finishes it, exactly once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select, update

from sluice.storage.schema import tasks
from tests.conftest import GatewayFactory
from tests.fakes.midjourney_upstream import FakeMidjourney
from tests.support import Gateway, LoopThread
from tests.tasks.conftest import FAST_TASKS, client, mj_channel, wait_for

PRICE = 50_000


def _task(gateway: Gateway, task_id: str) -> Any:
    async def read() -> Any:
        async with gateway.state.engine.connect() as conn:
            query = select(tasks).where(tasks.c.id == task_id)
            return (await conn.execute(query)).mappings().one()

    return gateway.call(read())


def test_a_dead_replicas_task_is_finished_by_another_exactly_once(
    pg_url: str, gateway_factory: GatewayFactory, loop_thread: LoopThread
) -> None:
    fake = loop_thread.run(FakeMidjourney(step_s=0.6).start())
    try:
        settings: dict[str, Any] = {"database_url": pg_url, "tasks": {**FAST_TASKS, "lease_s": 1.5}}
        first = gateway_factory([mj_channel(fake)], **settings)
        key = first.create_key("mj", budget_micro=1_000_000)
        with client(first, key) as http:
            task_id = http.post("/mj/submit/imagine", json={"prompt": "survive"}).json()["result"]
        upstream = fake.tasks["up-1"]
        wait_for(lambda: upstream.fetches >= 2)  # the first replica is polling it
        first.stop()
        # It died in the middle of a poll: it still holds the task's lease.
        lease_until = time.time() + 4.0
        first_lease = {"lease_owner": "dead-replica", "lease_until": lease_until}

        async def hold() -> None:
            async with first.state.engine.begin() as conn:
                await conn.execute(update(tasks).where(tasks.c.id == task_id).values(first_lease))

        first.call(hold())
        fetched = upstream.fetches
        second = gateway_factory([mj_channel(fake)], **settings)
        time.sleep(1.0)
        if time.time() < lease_until - 0.2:  # (a slow start-up may have used up the lease)
            assert upstream.fetches == fetched  # the lease holds: the second replica waits
        with client(second, key) as http:
            done = wait_for(
                lambda: (
                    (t := http.get(f"/mj/task/{task_id}/fetch").json())["status"] == "SUCCESS" and t
                )
            )
        assert done["id"] == task_id and upstream.fetches > fetched
        row = _task(second, task_id)
        assert row["state"] == "success" and row["cost_micro"] == PRICE
        assert row["lease_owner"] is None
        assert [r["cost_micro"] for r in second.usage_rows(key)] == [PRICE]
        assert second.key_record(key).spent_micro == PRICE
    finally:
        loop_thread.run(fake.stop())


def test_two_live_replicas_settle_each_task_once(
    pg_url: str, gateway_factory: GatewayFactory, loop_thread: LoopThread
) -> None:
    fake = loop_thread.run(FakeMidjourney(step_s=0.3).start())
    try:
        settings: dict[str, Any] = {"database_url": pg_url, "tasks": FAST_TASKS}
        replicas = [gateway_factory([mj_channel(fake)], **settings) for _ in range(2)]
        key = replicas[0].create_key("mj")
        ids = []
        for n in range(8):
            with client(replicas[n % 2], key) as http:
                submitted = http.post("/mj/submit/imagine", json={"prompt": f"t{n} maybe fail"})
                ids.append(submitted.json()["result"])

        def finished() -> bool:
            with client(replicas[0], key) as http:
                listed = http.post("/mj/task/list-by-condition", json={"ids": ids}).json()
            return len(listed) == 8 and all(t["status"] == "FAILURE" for t in listed)

        wait_for(finished)
        polls = [r.app.state.sluice_task_poller.polls for r in replicas]
        assert all(p > 0 for p in polls), polls  # both replicas did part of the work
        time.sleep(0.5)  # any late second settlement would show now
        rows = replicas[1].usage_rows(key)
        assert sorted(r["request_id"] for r in rows) == sorted(ids)  # once each
        assert all(r["cost_micro"] == 0 for r in rows)
        assert replicas[0].key_record(key).spent_micro == 0
    finally:
        loop_thread.run(fake.stop())


def test_redis_budget_counters_follow_charges_and_refunds(
    gateway_factory: GatewayFactory, loop_thread: LoopThread, redis_url: str
) -> None:
    fake = loop_thread.run(FakeMidjourney().start())
    try:
        gateway = gateway_factory([mj_channel(fake)], redis_url=redis_url, tasks=FAST_TASKS)
        key = gateway.create_key("mj", budget_micro=120_000)
        key_id = gateway.key_record(key).id

        def shared_spent() -> int:
            gateway.call(asyncio.sleep(0.2))  # allowance settlements are batched (50 ms)
            return int(gateway.call(gateway.state.ledger.spent(key_id, -1)))

        with client(gateway, key) as http:
            ok = http.post("/mj/submit/imagine", json={"prompt": "fine"}).json()["result"]
            bad = http.post("/mj/submit/imagine", json={"prompt": "will fail"}).json()["result"]
            assert shared_spent() == 2 * PRICE  # both charged in Redis as in the database
            over = http.post("/mj/submit/imagine", json={"prompt": "third"})
            assert over.status_code == 429  # 3 x 50,000 > 120,000

            def ended(task_id: str) -> bool:
                status = http.get(f"/mj/task/{task_id}/fetch").json()["status"]
                return status in ("SUCCESS", "FAILURE")

            wait_for(lambda: ended(ok) and ended(bad))
        assert shared_spent() == PRICE
        assert gateway.key_record(key).spent_micro == PRICE
    finally:
        loop_thread.run(fake.stop())
