"""The official OpenAI SDK (sync and async) against Sluice relaying to a fake OpenAI upstream."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI, Scripted
from tests.support import Gateway

SdkFactory = Callable[..., openai.OpenAI]


def test_chat_non_streaming_is_relayed_and_billed(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = gateway.create_key("chat", budget_micro=10_000_000)
    client = sdk(gateway, key)
    reply = client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from the fake upstream!"
    assert reply.usage is not None and reply.usage.prompt_tokens == 11
    rows = gateway.usage_rows(key)
    assert len(rows) == 1
    # 11 prompt tokens at $1/M + 6 completion tokens at $2/M = 23 micro-dollars
    assert rows[0]["cost_micro"] == 23
    assert rows[0]["status"] == 200 and rows[0]["stream"] is False
    assert fake_openai.received[0].headers["Authorization"].startswith("Bearer sk-upstream")


def test_chat_streaming_strips_forced_usage_chunk(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = gateway.create_key("stream", budget_micro=10_000_000)
    client = sdk(gateway, key)
    chunks = list(
        client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream!"
    assert all(c.usage is None for c in chunks), "client did not ask for usage"
    assert fake_openai.received[0].body["stream_options"] == {"include_usage": True}
    rows = gateway.usage_rows(key)
    assert rows[0]["completion_tokens"] == 6 and rows[0]["cost_micro"] == 23


async def test_async_client_streams_with_usage_when_asked(gateway: Gateway) -> None:
    key = gateway.create_key("async", budget_micro=10_000_000)
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    stream = await client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    await client.close()


def test_unknown_key_is_rejected_with_openai_error(gateway: Gateway, sdk: SdkFactory) -> None:
    client = sdk(gateway, "sk-not-a-real-key-123")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_upstream_cookies_are_never_replayed_to_later_requests(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    """Upstreams behind CDNs set cookies (OpenAI's Cloudflare sets ``__cf_bm``). A gateway's
    one upstream session serves every tenant, so a jar would send one client's cookie with the
    next client's request: nothing an upstream sets may be stored."""
    # By host name: cookie jars ignore cookies from bare IP addresses.
    by_name = fake_openai.base_url.replace("127.0.0.1", "localhost")
    gateway = gateway_factory([openai_channel(fake_openai, base_url=by_name)])

    reply = b'{"id":"c1","object":"chat.completion","created":1,"model":"test-model",' \
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},' \
        b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,' \
        b'"total_tokens":2}}'  # fmt: skip
    fake_openai.script.append(
        Scripted(body=reply, headers={"set-cookie": "session=tenant-a; Path=/"})
    )
    first = sdk(gateway, gateway.create_key("tenant-a", budget_micro=10_000_000))
    second = sdk(gateway, gateway.create_key("tenant-b", budget_micro=10_000_000))
    raw = first.chat.completions.with_raw_response.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert "set-cookie" not in raw.headers, "upstream cookies must not reach the client"
    second.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
    assert len(fake_openai.received) == 2
    sent = {name.lower() for name in fake_openai.received[1].headers}
    assert "cookie" not in sent, fake_openai.received[1].headers


def test_finished_streams_hand_their_upstream_connection_back(
    gateway: Gateway, fake_openai: FakeOpenAI, sdk: SdkFactory
) -> None:
    """A stream that ended with [DONE] leaves its upstream connection in the pool: the next
    request reuses it instead of paying a new (TLS, for a real provider) handshake — also when
    the end of the upstream's body comes in a later packet than [DONE]."""
    fake_openai.eof_delay_s = 0.05
    client = sdk(gateway, gateway.create_key("reuse", budget_micro=10_000_000))
    for stream in (True, True, False, True):
        reply = client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=stream
        )
        if stream:
            assert isinstance(reply, openai.Stream)
            assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        time.sleep(0.1)  # the end of the body arrives meanwhile; the connection is back
    peers = [item.peer for item in fake_openai.received]
    assert len(peers) == 4 and len(set(peers)) == 1, peers
