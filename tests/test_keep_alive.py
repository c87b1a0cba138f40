"""Idle client connections outlive the clients' own idle limits (``keep_alive_s``).

httpx drops an idle pooled connection after 5 s; uvicorn's default was also 5 s, so a request
sent at that moment could meet a connection the server was closing (a client-side ReadError,
seen under load in tests/resilience/test_fault_suite.py). The server now keeps idle connections
for 75 s by default, and the setting is honoured both ways.
"""

from __future__ import annotations

import asyncio
import time

from tests.conftest import GatewayFactory

_REQUEST = b"GET /healthz HTTP/1.1\r\nhost: sluice\r\n\r\n"


async def _ask_twice(port: int, idle_s: float) -> tuple[bytes, bytes]:
    """One request, ``idle_s`` of silence, then a second request on the same connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_REQUEST)
        first = await reader.readuntil(b"\r\n\r\n")
        length = int(first.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(idle_s)
        try:
            writer.write(_REQUEST)
            await writer.drain()
            second = await asyncio.wait_for(reader.read(4096), 5)
        except (ConnectionError, OSError):
            second = b""
    finally:
        writer.close()
    return first, second


def test_idle_connection_is_kept_longer_than_client_pools_keep_theirs(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory([])
    started = time.monotonic()
    first, second = asyncio.run(_ask_twice(gateway.port, idle_s=6.0))
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 200"), "the server closed a 6 s idle connection"
    assert time.monotonic() - started >= 6.0


def test_keep_alive_setting_is_honoured(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory([], keep_alive_s=1)
    first, second = asyncio.run(_ask_twice(gateway.port, idle_s=2.5))
    assert first.startswith(b"HTTP/1.1 200")
    assert second == b"", "the idle connection should have been closed after 1 s"
