"""Three ``sluice serve`` replicas on PostgreSQL + Redis share batches by lease; one is killed
(SIGKILL) mid-batch and another takes its batch over: no line reaches the upstream twice, every
line ends up in exactly one of its batch's files, and only lines that were in flight on the
killed replica can fail (``line_interrupted``), never be sent again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from sluice.storage.db import create_engine
from sluice.storage.schema import batches
from tests.batches.conftest import MODEL, claude_channel, jsonl, upstream_calls_by_line
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.scale.replicas import Replica, ReplicaSet, replica_config
from tests.support import ADMIN_KEY

BATCHES = 3
LINES = 300
CONCURRENCY = 4


@pytest.fixture
def replicas(
    pg_url: str,
    redis_url: str,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> Iterator[ReplicaSet]:
    config = replica_config(
        tmp_path / "sluice.yaml", pg_url, redis_url, "http://unused",
        channels=[claude_channel(fake_anthropic)],
        batches={"concurrency": CONCURRENCY, "lines_per_second": 60, "lease_s": 3,
                 "poll_s": 0.2, "max_active_per_worker": 1},
        files={"directory": str(tmp_path / "shared-files")},  # one host: a shared directory
    )  # fmt: skip
    group = ReplicaSet()
    try:
        group.start(config, 3, tmp_path)
        yield group
    finally:
        group.stop()


def _line(batch: int, index: int) -> dict[str, Any]:
    custom_id = f"b{batch}-{index}"
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"line {custom_id}"}],
            "max_tokens": 3,
        },
    }


async def _owners(database_url: str) -> dict[str, str | None]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(batches.c.id, batches.c.lease_owner))).all()
        return {row.id: row.lease_owner for row in rows}
    finally:
        await engine.dispose()


def _replica_of(group: ReplicaSet, owner: str) -> Replica:
    pid = int(owner.split(":")[1])  # host:pid:token, the pid of the worker process
    for replica in group.replicas:
        if replica.process.poll() is None and os.getpgid(pid) == replica.process.pid:
            return replica
    raise AssertionError(f"no live replica runs worker {pid}")


def test_a_replica_killed_mid_batch_loses_no_line_and_sends_none_twice(
    replicas: ReplicaSet,
    pg_url: str,
    fake_anthropic: FakeAnthropic,
) -> None:
    urls = [r.url for r in replicas.replicas]
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(f"{urls[0]}/admin/keys", json={"name": "b"}, headers=admin)
    assert created.status_code == 201, created.text
    auth = {"authorization": f"Bearer {created.json()['key']}"}
    ids: list[str] = []
    for batch in range(BATCHES):
        data = jsonl([_line(batch, i) for i in range(LINES)])
        uploaded = httpx.post(
            f"{urls[batch]}/v1/files", headers=auth,
            files={"file": ("in.jsonl", data)}, data={"purpose": "batch"},
        )  # fmt: skip
        assert uploaded.status_code == 200, uploaded.text
        made = httpx.post(
            f"{urls[batch]}/v1/batches", headers=auth,
            json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
                  "completion_window": "24h"},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        ids.append(made.json()["id"])

    # Each replica holds one batch at a time; wait until the first batch is well under way.
    deadline = time.monotonic() + 60
    while True:
        state = httpx.get(f"{urls[0]}/v1/batches/{ids[0]}", headers=auth).json()
        if state["request_counts"]["completed"] >= LINES // 4:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    owners = asyncio.run(_owners(pg_url))
    owner = owners[ids[0]]
    assert owner is not None and state["status"] == "in_progress"
    assert len({o for o in owners.values() if o}) >= 2, "the batches were not spread"
    victim = _replica_of(replicas, owner)
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    survivor = next(r.url for r in replicas.replicas if r is not victim)

    finished: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 120
    while len(finished) < BATCHES:
        for batch_id in ids:
            body = httpx.get(f"{survivor}/v1/batches/{batch_id}", headers=auth).json()
            if body["status"] not in ("validating", "in_progress", "finalizing"):
                finished[batch_id] = body
        assert time.monotonic() < deadline, finished
        time.sleep(0.2)

    calls = upstream_calls_by_line(fake_anthropic)
    assert max(calls.values()) == 1, "a line reached the upstream twice"
    interrupted: list[str] = []
    for batch, batch_id in enumerate(ids):
        body = finished[batch_id]
        assert body["status"] == "completed", body
        counts = body["request_counts"]
        assert counts["total"] == LINES and counts["completed"] + counts["failed"] == LINES
        seen: list[str] = []
        for name in ("output_file_id", "error_file_id"):
            if name not in body:
                continue
            content = httpx.get(f"{survivor}/v1/files/{body[name]}/content", headers=auth)
            assert content.status_code == 200, content.text
            for raw in content.content.splitlines():
                line = orjson.loads(raw)
                seen.append(line["custom_id"])
                if name == "output_file_id":
                    assert line["response"]["status_code"] == 200
                    assert calls[f"line {line['custom_id']}"] == 1
                else:
                    assert line["error"]["code"] == "line_interrupted", line
                    interrupted.append(line["custom_id"])
        if batch != 0:
            assert counts["failed"] == 0, body  # never on the killed replica's batch
        # Every line is in exactly one file.
        assert sorted(seen) == sorted(f"b{batch}-{i}" for i in range(LINES))
    # Only what was in flight on the killed replica can have been interrupted.
    assert len(interrupted) <= CONCURRENCY
    assert all(custom_id.startswith("b0-") for custom_id in interrupted)
    succeeded = sum(finished[b]["request_counts"]["completed"] for b in ids)
    assert succeeded + len(interrupted) == BATCHES * LINES
    assert succeeded <= len(calls) <= succeeded + len(interrupted)
