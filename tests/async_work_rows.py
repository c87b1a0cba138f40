"""Tasks and batches written straight into their tables, for the admin API and console tests
that list them (running real Midjourney jobs or batches would test those flows again)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert

from sluice.storage.schema import batch_lines, batches, tasks
from sluice.storage.usage_sink import UsageRow
from tests.support import Gateway

__all__ = ["Seeded", "seed_async_work", "UPSTREAM_SECRETS"]

# Values a listing must never show: the upstream's task id and the callback's secret and URL.
UPSTREAM_SECRETS = ("up-task-7f3a9c", "cb-secret-5d21e8", "https://hooks.example/cb-5d21e8")


@dataclass(frozen=True)
class Seeded:
    alice: str
    bob: str
    now: float
    # task ids: alice's finished image, alice's running song (never due for a poll, so the
    # gateway's poller leaves it alone), bob's failed video
    image: str
    song: str
    video: str
    # batch ids: alice's completed batch, bob's running one
    done: str
    running: str


def _task(key_id: str, ident: str, kind: str, state: str, at: float, **more: Any) -> dict[str, Any]:
    return {
        "id": ident, "key_id": key_id, "kind": kind, "action": more.pop("action", "imagine"),
        "model": more.pop("model", f"{kind}-model"), "channel": "async-ch",
        "upstream_id": UPSTREAM_SECRETS[0], "state": state, "created_at": at, "updated_at": at,
        "callback_secret": UPSTREAM_SECRETS[1], "callback_url": UPSTREAM_SECRETS[2], **more,
    }  # fmt: skip


def _batch(key_id: str, ident: str, status: str, at: float, **more: Any) -> dict[str, Any]:
    return {
        "id": ident, "key_id": key_id, "endpoint": "/v1/chat/completions",
        "input_file_id": "file-x", "completion_window": "24h", "status": status,
        "price_ppm": 500_000, "created_at": at, "expires_at": at + 86_400, **more,
    }  # fmt: skip


def _usage(request_id: str, key_id: str, cost: int, at: float) -> UsageRow:
    return UsageRow(
        request_id=request_id, key_id=key_id, endpoint="chat", model="m", upstream_model="m",
        channel="ch", prompt_tokens=1, cached_tokens=0, completion_tokens=1, cost_micro=cost,
        status=200, error_code=None, latency_ms=10.0, ttft_ms=None, stream=False, created_at=at,
    )  # fmt: skip


def seed_async_work(gateway: Gateway) -> Seeded:
    alice = gateway.key_record(gateway.create_key("alice")).id
    bob = gateway.key_record(gateway.create_key("bob")).id
    now = time.time()
    seeded = Seeded(
        alice=alice, bob=bob, now=now, image="1000000000000000001", song="song-2",
        video="video_3", done="batch_aaaa", running="batch_bbbb",
    )  # fmt: skip
    task_rows = [
        _task(alice, seeded.image, "midjourney", "success", now - 300, mode="fast",
              reserved_micro=50_000, cost_micro=40_000, progress=100, finished_at=now - 200),
        _task(alice, seeded.song, "suno", "in_progress", now - 100, action="music",
              reserved_micro=100_000, progress=40),
        _task(bob, seeded.video, "video", "failure", now - 50, action="create",
              reserved_micro=200_000, cost_micro=0, progress=10, finished_at=now - 40,
              fail_reason="upstream refused the prompt"),
    ]  # fmt: skip
    batch_rows = [
        _batch(alice, seeded.done, "completed", now - 3600, total=3, completed=2, failed=1,
               completed_at=now - 3000),
        # leased by a replica that is not there: the gateway's own runner leaves it running
        _batch(bob, seeded.running, "in_progress", now - 60, total=4, in_progress_at=now - 55,
               lease_owner="another-replica", lease_until=now + 3600),
    ]  # fmt: skip
    line_rows = [
        {"batch_id": seeded.running, "line_no": n, "custom_id": f"c{n}", "state": state,
         "owner": "w1", "started_at": now - 50}
        for n, state in enumerate(("succeeded", "succeeded", "failed", "running"))
    ]  # fmt: skip

    async def write() -> None:
        async with gateway.state.engine.begin() as conn:
            # one row at a time: the rows set different columns
            for row in task_rows:
                await conn.execute(insert(tasks).values(**row))
            for row in batch_rows:
                await conn.execute(insert(batches).values(**row))
            await conn.execute(insert(batch_lines), line_rows)

    gateway.call(write())
    usage_rows = [
        _usage(f"{seeded.done}:1", alice, 100, now - 3500),
        _usage(f"{seeded.done}:2", alice, 200, now - 3400),
        _usage(f"{seeded.done}:3", alice, 0, now - 3300),
        _usage(f"{seeded.running}:1", bob, 7, now - 50),
        # near misses: another batch whose id starts with this one's, and a plain request id
        _usage(f"{seeded.done}1:1", alice, 90_000, now - 3200),
        _usage(seeded.done, alice, 80_000, now - 3100),
    ]
    for row in usage_rows:
        gateway.state.usage_sink.record(row)
    gateway.flush()
    return seeded
