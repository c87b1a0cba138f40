"""Remote image inlining for Anthropic (and Gemini) channels: SSRF guard, size cap, timeout.

Everything runs against servers on 127.0.0.1; "public" targets cannot be reached offline, so the
refusals are the interesting half and the allowed path uses a channel that permits private URLs.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from sluice.core import RelayCall
from sluice.errors import InvalidRequest
from sluice.providers import media
from sluice.providers.configs import AnthropicConfig
from sluice.settings import ImageFetchConfig
from tests.conformance.conftest import PNG_BYTES
from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import UPSTREAM_KEY, FakeAnthropic, error_body
from tests.fakes.openai_upstream import Scripted
from tests.support import LoopThread

STRICT = AnthropicConfig(name="strict")
LENIENT = AnthropicConfig(name="lenient", allow_private_image_urls=True)


def call_with(*urls: str) -> RelayCall:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "look"}]
    parts += [{"type": "image_url", "image_url": {"url": u, "detail": "low"}} for u in urls]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    return RelayCall("chat", "/chat/completions", body, orjson.dumps(body), "m", "m", False, False)


class Images:
    def __init__(self) -> None:
        self.hits = 0
        self.port = 0
        self.runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> Images:
        app = web.Application()
        app.router.add_get("/ok.png", self._ok)
        app.router.add_get("/big.png", self._big)
        app.router.add_get("/slow.png", self._slow)
        app.router.add_get("/hop", self._hop)
        app.router.add_get("/missing.png", self._missing)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site.port
        return self

    async def _ok(self, request: web.Request) -> web.Response:
        self.hits += 1
        # A wrong content-type: the bytes are sniffed, so this is still a PNG.
        return web.Response(body=PNG_BYTES, content_type="application/octet-stream")

    async def _big(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        response = web.StreamResponse(headers={"content-type": "image/png"})
        await response.prepare(request)
        for _ in range(8):
            await response.write(PNG_BYTES + b"\0" * 1024)
        return response

    async def _slow(self, request: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(0.6)
        return web.Response(body=PNG_BYTES, content_type="image/png")

    async def _hop(self, request: web.Request) -> web.Response:
        self.hits += 1
        raise web.HTTPFound("/ok.png")

    async def _missing(self, request: web.Request) -> web.Response:
        return web.Response(status=404)


@pytest.fixture
def images(loop_thread: LoopThread) -> Iterator[Images]:
    server = loop_thread.run(Images().start())
    yield server
    assert server.runner is not None
    loop_thread.run(server.runner.cleanup())


def inline(
    loop_thread: LoopThread,
    call: RelayCall,
    channel: AnthropicConfig,
    limits: ImageFetchConfig | None = None,
) -> RelayCall:
    return loop_thread.run(media.inline_remote_images(call, channel, limits))


def test_inlines_allowed_urls_and_follows_redirects(
    loop_thread: LoopThread, images: Images
) -> None:
    call = call_with(images.url("/ok.png"), images.url("/hop"))
    out = inline(loop_thread, call, LENIENT)
    parts = out.body["messages"][0]["content"]
    expected = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
    assert [p["image_url"]["url"] for p in parts[1:]] == [expected, expected]
    assert parts[1]["image_url"]["detail"] == "low"
    assert orjson.loads(out.raw_body) == out.body
    assert call.body["messages"][0]["content"][1]["image_url"]["url"] == images.url("/ok.png")


def test_untouched_without_remote_images(loop_thread: LoopThread) -> None:
    call = call_with("data:image/png;base64,AAAA")
    assert inline(loop_thread, call, STRICT) is call


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.png",
        "http://localhost:9/x.png",
        "http://10.1.2.3/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/x.png",
        "http://[::ffff:127.0.0.1]:9/x.png",
        "http://0.0.0.0:9/x.png",
        "http://192.168.0.1/x.png",
    ],
)
def test_private_targets_refused(loop_thread: LoopThread, url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        inline(loop_thread, call_with(url), STRICT)
    assert caught.value.code == "invalid_image_url"
    assert caught.value.param == "messages[0].content[1].image_url.url"
    assert "private, loopback or link-local" in caught.value.message


def test_loopback_server_is_never_contacted_when_refused(
    loop_thread: LoopThread, images: Images
) -> None:
    with pytest.raises(InvalidRequest):
        inline(loop_thread, call_with(images.url("/ok.png")), STRICT)
    assert images.hits == 0


def test_size_cap(loop_thread: LoopThread, images: Images) -> None:
    limits = ImageFetchConfig(max_image_bytes=4096)
    with pytest.raises(InvalidRequest) as caught:
        inline(loop_thread, call_with(images.url("/big.png")), LENIENT, limits)
    assert "larger than" in caught.value.message


def test_timeout(loop_thread: LoopThread, images: Images) -> None:
    limits = ImageFetchConfig(timeout_s=0.2)
    with pytest.raises(InvalidRequest) as caught:
        inline(loop_thread, call_with(images.url("/slow.png")), LENIENT, limits)
    assert "longer than" in caught.value.message


def test_upstream_http_error(loop_thread: LoopThread, images: Images) -> None:
    with pytest.raises(InvalidRequest) as caught:
        inline(loop_thread, call_with(images.url("/missing.png")), LENIENT)
    assert "HTTP 404" in caught.value.message


# --- through the gateway: one fetch per request, whatever the failovers ---------------------


def _two_claude_channels(fake: FakeAnthropic, *, b_allows_private: bool) -> list[dict[str, Any]]:
    def channel(name: str, priority: int, allow_private: bool) -> dict[str, Any]:
        return {"name": name, "type": "anthropic", "base_url": fake.base_url,
                "api_key": UPSTREAM_KEY, "models": ["test-claude"], "priority": priority,
                "allow_private_image_urls": allow_private}  # fmt: skip

    return [channel("a", 2, True), channel("b", 1, b_allows_private)]


def _image_message(url: str) -> list[dict[str, Any]]:
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


def _ask_with_image_after_an_overload(
    gateway_factory: GatewayFactory,
    sdk: Any,
    fake: FakeAnthropic,
    url: str,
    *,
    b_allows_private: bool,
) -> Any:
    """Channel a (private images allowed) answers 529 once; the request fails over to b."""
    fake.script.append(Scripted(status=529, body=error_body("overloaded_error", "busy")))
    gateway = gateway_factory(_two_claude_channels(fake, b_allows_private=b_allows_private))
    client = sdk(gateway, gateway.create_key())
    return client.chat.completions.create(model="test-claude", messages=_image_message(url))


def test_failover_reuses_the_fetched_image(
    gateway_factory: GatewayFactory, sdk: Any, fake_anthropic: FakeAnthropic, images: Images
) -> None:
    reply = _ask_with_image_after_an_overload(
        gateway_factory, sdk, fake_anthropic, images.url("/ok.png"), b_allows_private=True
    )
    assert reply.choices[0].message.content
    assert len(fake_anthropic.received) == 2, "channel a refused, channel b answered"
    assert images.hits == 1, "the image was fetched again for the second attempt"
    sources = [r.body["messages"][0]["content"][1]["source"] for r in fake_anthropic.received]
    assert sources[0] == sources[1] and sources[0]["type"] == "base64"


def test_failover_to_a_stricter_channel_does_not_reuse_private_bytes(
    gateway_factory: GatewayFactory, sdk: Any, fake_anthropic: FakeAnthropic, images: Images
) -> None:

    with pytest.raises(openai.BadRequestError) as caught:
        _ask_with_image_after_an_overload(
            gateway_factory, sdk, fake_anthropic, images.url("/ok.png"), b_allows_private=False
        )
    assert caught.value.code == "invalid_image_url"
    assert len(fake_anthropic.received) == 1, "the strict channel never got the loopback image"
