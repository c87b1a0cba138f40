"""A batch whose worker died is taken over once its lease runs out: the lines the dead worker
had started and not ended are failed as ``line_interrupted`` (never sent again), the rest run
(or, for a batch being cancelled, nothing more runs)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from openai import OpenAI
from sqlalchemy import insert, update

from sluice.storage.schema import batch_lines, batches
from tests.batches.conftest import (
    chat_line,
    claude_channel,
    fast_batches,
    jsonl,
    upstream_calls_by_line,
    wait_for_status,
)
from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import FakeAnthropic

DEAD = "dead-host:1:feedbeef"


@pytest.mark.parametrize("status", ["in_progress", "cancelling"])
def test_a_dead_workers_batch_is_taken_over(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, sdk: Any, status: str
) -> None:
    channels = [claude_channel(fake_anthropic)]
    idle = gateway_factory(channels, batches=fast_batches(enabled=False))
    key = idle.create_key("t")
    client: OpenAI = sdk(idle, key)
    uploaded = client.files.create(
        file=("t.jsonl", jsonl([chat_line(i) for i in range(6)])), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    now = time.time()

    async def as_left_by_a_dead_worker() -> None:
        async with idle.state.engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch.id)
                .values(
                    status=status, in_progress_at=now - 5, lease_owner=DEAD, lease_until=now - 1
                )  # fmt: skip
            )
            await conn.execute(
                insert(batch_lines).values(
                    batch_id=batch.id,
                    line_no=0,
                    custom_id="req-0",
                    state="running",
                    owner=DEAD,
                    started_at=now - 2,
                )  # fmt: skip
            )

    idle.call(as_left_by_a_dead_worker())
    # A second gateway on the same database and files directory, with a runner.
    runner = gateway_factory(channels, batches=fast_batches())
    other: OpenAI = sdk(runner, key)
    final = "completed" if status == "in_progress" else "cancelled"
    done = wait_for_status(other, batch.id, (final,), timeout_s=30)
    assert done.request_counts is not None and done.error_file_id is not None
    errors = [orjson.loads(x) for x in other.files.content(done.error_file_id).content.splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("req-0", "line_interrupted")]
    calls = upstream_calls_by_line(fake_anthropic)
    assert "line 0" not in calls  # the interrupted line is never sent again
    if final == "completed":
        assert (done.request_counts.completed, done.request_counts.failed) == (5, 1)
        assert calls == {f"line {i}": 1 for i in range(1, 6)}
    else:
        assert (done.request_counts.completed, done.request_counts.failed) == (0, 1)
        assert calls == {}
