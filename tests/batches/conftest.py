"""Fixtures for the Batch API tests: a gateway with an Anthropic channel, and batch input lines."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import OpenAI
from openai.types import Batch

from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import UPSTREAM_KEY, FakeAnthropic
from tests.fakes.openai_upstream import REPLY_WORDS
from tests.scale import conftest as _scale
from tests.support import Gateway

pg_url = _scale.pg_url
redis_db = _scale.redis_db
redis_url = _scale.redis_url

MODEL = "test-claude"
# make_settings prices test-* at $1 / $2 per 1M input / output tokens: 1 and 2 micro-dollars
# per token; the fake Anthropic reports 11 input tokens and one output token per word.
PROMPT_TOKENS = 11
HALF_PRICE_PPM = 500_000


def claude_channel(fake: FakeAnthropic) -> dict[str, Any]:
    return {
        "name": "claude",
        "type": "anthropic",
        "base_url": fake.base_url,
        "api_key": UPSTREAM_KEY,
        "models": [MODEL],
    }


def fast_batches(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"concurrency": 16, "lines_per_second": 0, "poll_s": 0.2}
    config.update(overrides)
    return config


@pytest.fixture
def batch_gateway(gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic) -> Gateway:
    return gateway_factory([claude_channel(fake_anthropic)], batches=fast_batches())


def words_for(index: int) -> int:
    """Line ``index`` asks for 1..6 words, so each line's answer is its own."""
    return 1 + index % len(REPLY_WORDS)


def chat_line(index: int, *, model: str = MODEL, custom_id: str | None = None) -> dict[str, Any]:
    return {
        "custom_id": custom_id or f"req-{index}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": f"line {index}"}],
            "max_tokens": words_for(index),
        },
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def expected_cost(index: int, ppm: int = HALF_PRICE_PPM) -> int:
    return (PROMPT_TOKENS * 1 + words_for(index) * 2) * ppm // 1_000_000


def wait_for_status(
    client: OpenAI, batch_id: str, statuses: tuple[str, ...], timeout_s: float = 120
) -> Batch:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.1)


def upstream_calls_by_line(fake: FakeAnthropic) -> Counter[str]:
    """How many times the upstream was asked each line's prompt ('line N')."""
    counts: Counter[str] = Counter()
    for received in fake.received:
        content = received.body["messages"][0]["content"]
        text = content if isinstance(content, str) else content[0]["text"]
        counts[str(text)] += 1
    return counts


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sluice.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
