"""Helpers for the image-fetching tests: a loopback image server that counts every request, a
guard that makes any connection attempt beyond loopback fail (and be recorded) instead of
leaving the machine, and a gateway with one Anthropic channel."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.conformance.conftest import PNG_BYTES
from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import UPSTREAM_KEY, FakeAnthropic
from tests.support import Gateway, LoopThread

__all__ = [
    "ImageServer",
    "OutboundAttempts",
    "ask_with_images",
    "claude_gateway",
    "image_server",
    "no_outbound",
]

# 10 MiB of zeros after a PNG signature, gzip-compressed to ~10 KiB on the wire.
BOMB = gzip.compress(PNG_BYTES + b"\0" * (10 * 1024 * 1024), compresslevel=9)
# Small when decompressed too: an old fetcher that decompresses accepts it as a PNG.
SMALL_GZIP_PNG = gzip.compress(PNG_BYTES + b"\0" * 4096)


class ImageServer:
    """Serves a PNG at any path, counting requests; ``/redirect?to=URL`` answers 302 to URL,
    ``/loop`` to itself; other paths serve the special bodies below."""

    def __init__(self) -> None:
        self.hits = 0
        self.paths: list[str] = []
        self.accept_encodings: list[str | None] = []
        self.port = 0
        self.runner: web.AppRunner | None = None

    def url(self, path: str = "/img.png", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> ImageServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._any)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site.port
        try:  # the same port on ::1, so IPv6 loopback notations would reach it too
            await web.TCPSite(self.runner, "::1", self.port).start()
        except OSError:
            pass
        return self

    async def _any(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.paths.append(request.path)
        self.accept_encodings.append(request.headers.get("Accept-Encoding"))
        if request.path == "/redirect":
            raise web.HTTPFound(request.query["to"])
        if request.path == "/loop":
            raise web.HTTPFound("/loop")
        if request.path == "/bomb.png":
            return _gzip_response(BOMB)
        if request.path == "/small-gzip.png":
            return _gzip_response(SMALL_GZIP_PNG)
        if request.path == "/bomb-plain.png":  # compressed bytes, not declared as such
            return web.Response(body=BOMB, content_type="image/png")
        if request.path.startswith("/delayed/"):
            await asyncio.sleep(0.4)
        if request.path.startswith("/sized/"):  # /sized/<bytes>.png: a PNG of that size
            size = int(request.path.removeprefix("/sized/").removesuffix(".png"))
            body = PNG_BYTES + b"\0" * max(size - len(PNG_BYTES), 0)
            return web.Response(body=body, content_type="image/png")
        if request.path == "/slow.png":
            response = web.StreamResponse(headers={"content-type": "image/png"})
            await response.prepare(request)
            await response.write(PNG_BYTES)
            for _ in range(40):  # trickles for 20 s unless the fetcher gives up first
                await asyncio.sleep(0.5)
                await response.write(b"\0")
            return response
        return web.Response(body=PNG_BYTES, content_type="image/png")


def _gzip_response(body: bytes) -> web.Response:
    return web.Response(
        body=body, headers={"Content-Type": "image/png", "Content-Encoding": "gzip"}
    )


@pytest.fixture
def image_server(loop_thread: LoopThread) -> Iterator[ImageServer]:
    server = loop_thread.run(ImageServer().start())
    yield server
    assert server.runner is not None
    loop_thread.run(server.runner.cleanup())


class OutboundAttempts(list[Any]):
    """Addresses beyond loopback something in this process tried to connect to."""


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # Unix sockets and the like
    try:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified  # 0.0.0.0 and :: reach this machine


@pytest.fixture
def no_outbound(monkeypatch: pytest.MonkeyPatch) -> OutboundAttempts:
    """Any connect() to an address beyond loopback fails at once and is recorded, so a guard
    that lets one through fails the test without sending a packet off this machine."""
    attempts = OutboundAttempts()
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not _loopback(address):
            attempts.append(address)
            raise ConnectionRefusedError(f"test guard: no traffic beyond loopback ({address})")
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _loopback(address):
            attempts.append(address)
            return 111  # ECONNREFUSED
        return original_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


def claude_gateway(
    gateway_factory: GatewayFactory, fake: FakeAnthropic, *, allow_private: bool, **extra: Any
) -> Gateway:
    channel = {
        "name": "claude",
        "type": "anthropic",
        "base_url": fake.base_url,
        "api_key": UPSTREAM_KEY,
        "models": ["test-claude"],
        "allow_private_image_urls": allow_private,
    }
    return gateway_factory([channel], **extra)


def ask_with_images(gateway: Gateway, *urls: str) -> httpx.Response:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "look"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    body = {"model": "test-claude", "messages": [{"role": "user", "content": parts}]}
    key = gateway.create_key()
    return httpx.post(
        f"{gateway.base_url}/chat/completions",
        content=orjson.dumps(body),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=60,
    )
