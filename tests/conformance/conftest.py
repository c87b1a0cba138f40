"""Fixtures for the conformance suite: one fake + one gateway per provider, reused by its tests.

Each provider's fake and gateway start once per module (tests only read their own fresh key's
usage rows and the fake is reset before every test), which keeps the suite fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from sluice.health import MemoryChannelHealth
from tests.conformance.cases import PROVIDERS, ProviderCase
from tests.support import Gateway, LoopThread, make_settings, start_gateway

# A 1x1 transparent PNG.
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8ffff3f0005fe02fea7d6a4a90000000049454e44ae426082"
)


@dataclass
class Env:
    case: ProviderCase
    fake: Any
    gateway: Gateway

    def requests(self) -> list[Any]:
        return self.case.requests(self.fake)


class ImageServer:
    """Serves ``/cat.png`` (and a non-image) on loopback, counting hits."""

    def __init__(self) -> None:
        self.hits = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/cat.png") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> ImageServer:
        app = web.Application()
        app.router.add_get("/cat.png", self._png)
        app.router.add_get("/page.html", self._html)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site.port
        return self

    async def _png(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(body=PNG_BYTES, content_type="image/png")

    async def _html(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text="<html></html>", content_type="text/html")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture(scope="module", params=PROVIDERS, ids=[case.id for case in PROVIDERS])
def env(
    request: pytest.FixtureRequest,
    loop_thread: LoopThread,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    case: ProviderCase = request.param
    fake: Any = loop_thread.run(case.start())  # each provider has its own fake
    settings = make_settings(tmp_path_factory.mktemp(case.id), case.channels(fake))
    gateway = start_gateway(loop_thread, settings)
    yield Env(case=case, fake=fake, gateway=gateway)
    gateway.stop()
    loop_thread.run(fake.stop())


@pytest.fixture
def provider(env: Env) -> Iterator[Env]:
    """The module's provider env, reset before the test and checked for violations after."""
    env.case.reset(env.fake)
    # Fresh circuit breakers: earlier tests' scripted failures must not open a circuit (or
    # disable a channel after an auth failure) for this one.
    state = env.gateway.state
    state.health = MemoryChannelHealth(state.settings.circuit)
    yield env
    violations = env.case.violations(env.fake)
    assert not violations, f"{env.case.id} fake rejected requests: {violations}"


@pytest.fixture(scope="module")
def image_server(loop_thread: LoopThread) -> Iterator[ImageServer]:
    server = loop_thread.run(ImageServer().start())
    yield server
    loop_thread.run(server.stop())
