"""Fixtures of the tasks tests: fake task upstreams, a callback receiver, task-ready gateways."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.fakes.midjourney_upstream import SECRET, FakeMidjourney
from tests.fakes.server import serve_on_loopback
from tests.scale import conftest as _scale
from tests.support import Gateway, LoopThread

pg_url = _scale.pg_url
redis_db = _scale.redis_db
redis_url = _scale.redis_url

# Fast clocks: tasks move every 0.2 s, Sluice looks every 0.05 s and polls every 0.1 s.
FAST_TASKS: dict[str, Any] = {"tick_s": 0.05, "lease_s": 5.0, "allow_private_callback_urls": True}


@pytest.fixture
def fake_mj(loop_thread: LoopThread) -> Iterator[FakeMidjourney]:
    fake = loop_thread.run(FakeMidjourney().start())
    yield fake
    loop_thread.run(fake.stop())


def mj_channel(fake: FakeMidjourney, name: str = "mj", **overrides: Any) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "name": name,
        "type": "midjourney-proxy",
        "base_url": fake.base_url,
        "api_key": SECRET,
        "poll_interval_s": 0.1,
    }
    channel.update(overrides)
    return channel


@pytest.fixture
def mj_gateway(gateway_factory: GatewayFactory, fake_mj: FakeMidjourney) -> Gateway:
    return gateway_factory([mj_channel(fake_mj)], tasks=FAST_TASKS)


@dataclass
class Receiver:
    """A client's callback endpoint: records every POST it gets."""

    port: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver(loop_thread: LoopThread) -> Iterator[Receiver]:
    found = Receiver()

    async def hook(request: web.Request) -> web.Response:
        found.received.append((dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner, found.port = await serve_on_loopback(app)
        return runner

    runner = loop_thread.run(start())
    yield found
    loop_thread.run(runner.cleanup())


def wait_for(check: Callable[[], Any], timeout_s: float = 10.0, every_s: float = 0.05) -> Any:
    """``check()``'s first truthy value, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last: {value!r})")
        time.sleep(every_s)


def client(gateway: Gateway, key: str, *, header: str = "authorization") -> httpx.Client:
    value = f"Bearer {key}" if header == "authorization" else key
    return httpx.Client(base_url=gateway.url, headers={header: value}, timeout=10)
