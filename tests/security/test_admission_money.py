"""Admission and pricing against a tenant who wants more than they pay for (issue 16).

- holds: the reservation counts the larger of max_tokens/max_completion_tokens and of n/best_of;
- prices: the upstream model actually called is billed, never the alias the client asked for;
- order: a key over its rpm or out of budget is refused before its body is tokenised, and large
  bodies are tokenised off the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from sluice.cli import main as cli_main
from tests.conftest import GatewayFactory, openai_channel, require_service
from tests.fakes.openai_upstream import FakeOpenAI, Scripted
from tests.support import Gateway, LoopThread, free_port

HI = [{"role": "user", "content": "hi"}]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- 1. holds: the larger cap, the larger count -------------------------------------------------

# Each request's true worst case (100,000 output tokens, or 20 choices of 1,000; at $2/M at least
# 40,000 micro-dollars) is far over the budget of 10,000; the part an old admission counted
# (5 tokens, or one choice of 1,000) fits it.
BIG, SMALL = 50_000, 5
OVERSIZED_HOLDS = {
    "chat: max_tokens big, max_completion_tokens small": (
        "/chat/completions",
        {"messages": HI, "max_tokens": 2 * BIG, "max_completion_tokens": SMALL},
    ),
    "chat: max_completion_tokens big, max_tokens small": (
        "/chat/completions",
        {"messages": HI, "max_tokens": SMALL, "max_completion_tokens": 2 * BIG},
    ),
    "completions: best_of over n": (
        "/completions",
        {"prompt": "hi", "max_tokens": 1000, "n": 1, "best_of": 20},
    ),
    "chat: best_of over n (vLLM reads it)": (
        "/chat/completions",
        {"messages": HI, "max_tokens": 1000, "n": 1, "best_of": 20},
    ),
}


@pytest.mark.parametrize("path, fields", OVERSIZED_HOLDS.values(), ids=OVERSIZED_HOLDS.keys())
async def test_concurrent_requests_cannot_pass_budget_with_the_smaller_cap(
    gateway: Gateway, fake_openai: FakeOpenAI, path: str, fields: dict[str, Any]
) -> None:
    key = gateway.create_key("holds", budget_micro=10_000)
    body = {"model": "test-model", **fields}
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(path, json=body, headers=_auth(key)) for _ in range(8))
        )
    codes = [(r.status_code, r.json()["error"]["code"]) for r in responses]
    assert codes == [(429, "insufficient_quota")] * 8, codes
    assert not fake_openai.received, "no request may reach the upstream"
    assert gateway.key_record(key).spent_micro == 0


BAD_BEST_OF = {
    "chat: zero": ("/chat/completions", 0),
    "chat: negative": ("/chat/completions", -3),
    "chat: huge": ("/chat/completions", 1_000_000),
    "chat: string": ("/chat/completions", "4"),
    "chat: float": ("/chat/completions", 2.5),
    "chat: boolean": ("/chat/completions", True),
    "completions: over 20": ("/completions", 21),
    "completions: zero": ("/completions", 0),
}


@pytest.mark.parametrize("path, value", BAD_BEST_OF.values(), ids=BAD_BEST_OF.keys())
def test_best_of_is_validated_like_n(
    gateway: Gateway, fake_openai: FakeOpenAI, path: str, value: Any
) -> None:
    key = gateway.create_key("best-of")
    body: dict[str, Any] = {"model": "test-model", "best_of": value, "max_tokens": 5}
    body.update({"messages": HI} if path == "/chat/completions" else {"prompt": "hi"})
    response = httpx.post(gateway.base_url + path, json=body, headers=_auth(key))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "best_of"
    assert not fake_openai.received


# --- 2. prices: the model called, not the name asked for ---------------------------------------

# The fake upstream reports 11 prompt and 6 completion tokens for a chat call.
GPT_4O_COST = 88  # 11 x $2.50/M + 6 x $10/M = 87.5 micro-dollars, rounded half up
GPT_4O_MINI_COST = 5  # 11 x $0.15/M + 6 x $0.60/M = 5.25


def test_alias_bills_the_upstream_models_price(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    channel = openai_channel(fake_openai, models=[], model_map={"gpt-4o-mini": "gpt-4o"})
    gateway = gateway_factory([channel])
    key = gateway.create_key("alias")
    body = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 10}
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=_auth(key))
    assert response.status_code == 200, response.text
    assert fake_openai.received[-1].body["model"] == "gpt-4o"
    (row,) = gateway.usage_rows(key)
    assert (row["model"], row["upstream_model"]) == ("gpt-4o-mini", "gpt-4o")
    assert row["cost_micro"] == GPT_4O_COST
    assert gateway.key_record(key).spent_micro == GPT_4O_COST


@pytest.fixture
def second_fake(loop_thread: LoopThread) -> Any:
    fake = loop_thread.run(FakeOpenAI().start())
    yield fake
    loop_thread.run(fake.stop())


FAILOVER = {
    "gpt-4o fails, gpt-4o-mini serves": ("gpt-4o", "gpt-4o-mini", GPT_4O_MINI_COST),
    "gpt-4o-mini fails, gpt-4o serves": ("gpt-4o-mini", "gpt-4o", GPT_4O_COST),
}


@pytest.mark.parametrize("first, second, cost", FAILOVER.values(), ids=FAILOVER.keys())
def test_failover_bills_the_model_of_the_channel_used(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    second_fake: FakeOpenAI,
    first: str,
    second: str,
    cost: int,
) -> None:
    # Same alias on both channels; the client's name has a (glob) price of its own, $1/$2.
    channels = [
        openai_channel(
            fake_openai, name="first", priority=10, models=[], model_map={"test-smart": first}
        ),
        openai_channel(second_fake, name="second", models=[], model_map={"test-smart": second}),
    ]
    gateway = gateway_factory(channels)
    fake_openai.script.append(Scripted(status=500, body=b'{"error": {"message": "boom"}}'))
    key = gateway.create_key("failover")
    body = {"model": "test-smart", "messages": HI, "max_tokens": 10}
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=_auth(key))
    assert response.status_code == 200, response.text
    assert second_fake.received[-1].body["model"] == second
    (row,) = gateway.usage_rows(key)
    assert (row["channel"], row["upstream_model"], row["cost_micro"]) == ("second", second, cost)


def test_reservation_holds_the_dearest_candidate(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, second_fake: FakeOpenAI
) -> None:
    # The cheap channel is tried first, but the dear one may serve: the hold must cover it.
    channels = [
        openai_channel(
            fake_openai,
            name="cheap",
            priority=10,
            models=[],
            model_map={"test-smart": "gpt-4o-mini"},
        ),
        openai_channel(second_fake, name="dear", models=[], model_map={"test-smart": "gpt-4o"}),
    ]
    gateway = gateway_factory(channels)
    # 1,000 output tokens: $0.60/M -> 600, $2/M (the alias's glob) -> 2,000, $10/M -> 10,000.
    key = gateway.create_key("dearest", budget_micro=5_000)
    body = {"model": "test-smart", "messages": HI, "max_tokens": 1000}
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=_auth(key))
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert not fake_openai.received and not second_fake.received


def test_config_check_warns_about_an_alias_cheaper_than_its_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(
        "channels:\n"
        "  - name: trap\n"
        "    type: openai\n"
        "    base_url: http://127.0.0.1:9/v1\n"
        "    model_map: {gpt-4o-mini: gpt-4o, fine-alias: gpt-4o-mini}\n"
    )
    assert cli_main(["config", "check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "warning: channel trap: alias 'gpt-4o-mini' is priced below its target 'gpt-4o'" in out
    assert "fine-alias" not in out, "an alias without a price of its own is not a trap"


# --- 3. order: cheap refusals first, large bodies off the loop ---------------------------------


class _CountingTokens:
    """Counts how often the gateway tokenises a request body."""

    def __init__(self, gateway: Gateway) -> None:
        self.calls = 0
        tokens = gateway.state.tokens
        for name in ("count_messages", "count_prompt"):
            original = getattr(tokens, name)
            setattr(tokens, name, self._counting(original))

    def _counting(self, original: Any) -> Any:
        def count(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        return count


BIG_TEXT = "lorem ipsum dolor sit amet " * 20_000  # ~540 KB
ENDPOINTS = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": BIG_TEXT}]}),
    "completions": ("/v1/completions", {"prompt": BIG_TEXT}),
    "anthropic messages": ("/v1/messages", {"messages": [{"role": "user", "content": BIG_TEXT}]}),
}
REFUSALS = {
    "budget spent": ({"budget_micro": 0}, 0, "insufficient_quota"),
    # The first request is admitted, the second counted and refused: after it, no count.
    "over rpm": ({"rpm": 1}, 1, "rate_limit_exceeded"),
}


@pytest.fixture(params=["in-process", "redis"])
def limits_gateway(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> Gateway:
    """A gateway whose limits and budgets are in-process, or shared in Redis (allowances on)."""
    if request.param == "in-process":
        return gateway_factory([openai_channel(fake_openai)])
    require_service("Redis", "127.0.0.1", 6379)
    db = 1 + secrets.randbelow(15)  # key ids are random: no clash with other tests' keys
    return gateway_factory([openai_channel(fake_openai)], redis_url=f"redis://127.0.0.1:6379/{db}")


@pytest.mark.parametrize("path, fields", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize("limits, admitted, code", REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_key_is_not_tokenised(
    limits_gateway: Gateway,
    path: str,
    fields: dict[str, Any],
    limits: dict[str, int],
    admitted: int,
    code: str,
) -> None:
    gateway = limits_gateway
    key = gateway.create_key("refused", **limits)
    counter = _CountingTokens(gateway)
    body = {"model": "test-model", "max_tokens": 5, **fields}
    headers = {**_auth(key), "anthropic-version": "2023-06-01"}
    statuses = [
        httpx.post(gateway.url + path, json=body, headers=headers, timeout=30) for _ in range(6)
    ]
    assert [r.status_code for r in statuses] == [200] * admitted + [429] * (6 - admitted)
    for refused in statuses[admitted:]:
        error = refused.json()["error"]
        if "code" in error:  # the Anthropic route answers in Anthropic's shape, without one
            assert error["code"] == code, error
    # Admitted requests are counted, and one rpm refusal (found exactly, after counting); the
    # others are refused from what the worker already knows.
    assert counter.calls <= admitted * 2, counter.calls


def test_count_tokens_counts_against_rpm(gateway: Gateway) -> None:
    key = gateway.create_key("counter", rpm=3)
    body = {"model": "test-model", "messages": HI}
    headers = {**_auth(key), "anthropic-version": "2023-06-01"}
    url = gateway.url + "/v1/messages/count_tokens"
    statuses = [httpx.post(url, json=body, headers=headers).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = httpx.post(url, json=body, headers=headers)
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    chat = {"model": "test-model", "messages": HI, "max_tokens": 5}
    response = httpx.post(gateway.base_url + "/chat/completions", json=chat, headers=_auth(key))
    assert response.status_code == 429, "count_tokens used the key's requests for this minute"


EIGHT_MIB = 8 * 1024 * 1024


# An OpenAI-compatible upstream that reads a request's body, throws it away and answers, run as
# a process of its own: in the test's process (the shared fakes run in the gateway's loop
# thread) its parsing of the 8 MiB body would hold the GIL and stall the very gateway the test
# watches; a real upstream is elsewhere.
_SINK = """
import sys
from aiohttp import web

REPLY = {
    "id": "chatcmpl-sink", "object": "chat.completion", "created": 0, "model": "test-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok", "refusal": None},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 1, "total_tokens": 1001},
}

async def chat(request):
    async for _chunk in request.content.iter_chunked(1 << 16):
        pass
    return web.json_response(REPLY)

app = web.Application(client_max_size=64 * 1024 * 1024)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


@pytest.fixture
def sink_upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", _SINK, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "sink did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(10)


def _eight_mib_chat() -> bytes:
    text = "The quick brown fox jumps over the lazy dog. " * 22  # ~1 KB per message
    count = EIGHT_MIB // (len(text) + 40)
    body = {
        "model": "test-model",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": text} for _ in range(count)],
    }
    raw = orjson.dumps(body)
    assert EIGHT_MIB - 100_000 < len(raw) <= EIGHT_MIB
    return raw


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages/count_tokens"])
def test_healthz_answers_while_an_8_mib_body_is_tokenised(
    gateway_factory: GatewayFactory, sink_upstream: str, path: str
) -> None:
    channel = {
        "name": "sink",
        "type": "openai-compatible",
        "base_url": sink_upstream,
        "api_key": "sk-upstream-sink",
        "models": ["test-*"],
    }
    gateway = gateway_factory([channel], limits={"max_body_bytes": EIGHT_MIB + 1024})
    key = gateway.create_key("big")
    raw = _eight_mib_chat()
    headers = {**_auth(key), "content-type": "application/json", "anthropic-version": "2023-06-01"}
    counter = _CountingTokens(gateway)
    # The big request is sent from a thread of its own, so that nothing the client does to send
    # it (or read the answer) delays the polls measured here.
    with (
        concurrent.futures.ThreadPoolExecutor(1) as sender,
        httpx.Client(base_url=gateway.url, timeout=60) as client,
    ):
        assert client.get("/healthz").status_code == 200  # connection open, warm
        big = sender.submit(
            httpx.post, gateway.url + path, content=raw, headers=headers, timeout=60
        )
        latencies: list[float] = []
        while not big.done():
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
        response = big.result()
    assert response.status_code == 200, response.text[:500]
    assert counter.calls == 1, "the body was tokenised"
    assert len(latencies) >= 5, "the big request finished too fast to be a test"
    slow = [round(s * 1000) for s in latencies if s >= 0.1]
    assert not slow, f"healthz took {slow} ms of {len(latencies)} polls"
