"""Slow and greedy clients: header and body deadlines, the per-worker connection limit, and the
default per-key concurrency cap.

The slowloris test opens hundreds of sockets that trickle their request a byte at a time; while
they hang, a normal client is served, and the server closes each of them (with 408
``request_timeout``) once its deadline has passed.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest

from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.scale.conftest import redis_db, redis_url  # noqa: F401 - fixtures
from tests.support import Gateway

SLOW_SOCKETS = 500
DEADLINE_S = 8.0  # long enough to open 500 sockets and serve a client on a busy 2-core box
SLACK_S = 4.0  # the watchdog fires on time; the rest is a loaded 2-core machine
TRICKLE_EVERY_S = 0.5
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def enough_file_descriptors() -> Iterator[int]:
    """Both ends of every socket live in this process: raise the soft limit when allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * SLOW_SOCKETS + 512
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    available = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    yield min(SLOW_SOCKETS, (available - 512) // 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class SlowSocket:
    connected_at: float
    closed_at: float | None = None
    received: bytes = b""
    reset: bool = False


def slow_request(phase: str, port: int, key: str) -> tuple[bytes, bytes]:
    """(what is sent at once, what is then trickled a byte at a time: never all of it)."""
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n".encode()
    if phase == "headers":
        return head, b"x-slow: " + b"a" * 1000 + b"\r\n\r\n"
    body = orjson.dumps(CHAT).ljust(4000)
    head += (
        f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


async def hold_slow_socket(port: int, first: bytes, rest: bytes) -> SlowSocket:
    # Timed from before the connect: the server's clock starts when it accepts, which a busy
    # client loop may only notice later (a socket would then seem closed before its deadline).
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = SlowSocket(connected_at=started)
    writer.write(first)

    async def trickle() -> None:
        for byte in rest:
            await asyncio.sleep(TRICKLE_EVERY_S)
            if sock.received or sock.closed_at is not None:
                return
            writer.write(bytes([byte]))
            await writer.drain()

    trickling = asyncio.create_task(trickle())
    try:
        while chunk := await reader.read(65536):
            sock.received += chunk
    except ConnectionError:
        sock.reset = True
    sock.closed_at = time.monotonic()
    trickling.cancel()
    await asyncio.gather(trickling, return_exceptions=True)
    writer.close()
    return sock


async def normal_request(gateway: Gateway, key: str) -> tuple[int, float]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{gateway.base_url}/chat/completions", json=CHAT,
            headers={"authorization": f"Bearer {key}"},
        )  # fmt: skip
        return response.status_code, time.monotonic()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_slowloris_sockets_are_closed_and_normal_clients_served(
    phase: str,
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    enough_file_descriptors: int,
) -> None:
    other = 600.0  # the deadline not under test stays out of the way
    limits = {
        "header_timeout_s": DEADLINE_S if phase == "headers" else other,
        "body_timeout_s": DEADLINE_S if phase == "body" else other,
    }
    gateway = gateway_factory([openai_channel(fake_openai)], limits=limits)
    key = gateway.create_key("slow")
    first, rest = slow_request(phase, gateway.port, key)
    count = enough_file_descriptors

    async def scenario() -> tuple[list[SlowSocket], int, float]:
        holders = []
        for _ in range(count):  # a few at a time: the listen backlog is not under test
            holders.append(asyncio.create_task(hold_slow_socket(gateway.port, first, rest)))
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.5)
        status, served_at = await asyncio.wait_for(normal_request(gateway, key), 10)
        socks = await asyncio.wait_for(asyncio.gather(*holders), DEADLINE_S + SLACK_S + 10)
        return socks, status, served_at

    socks, status, served_at = asyncio.run(scenario())
    assert status == 200
    assert min(s.closed_at or 0 for s in socks) > served_at, "served while they all hung"
    lived = [(s.closed_at or 0) - s.connected_at for s in socks]
    assert min(lived) >= DEADLINE_S - 0.5, "no socket is closed before its deadline"
    assert max(lived) <= DEADLINE_S + SLACK_S, "every socket is closed after its deadline"
    answered = [s for s in socks if not s.reset]
    assert len(answered) >= 0.95 * len(socks)  # a trickled byte may cross the close: RST
    for sock in answered:
        head, _, body = sock.received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), sock.received[:200]
        assert orjson.loads(body)["error"]["code"] == "request_timeout"
    # The gateway still serves after the storm.
    assert asyncio.run(normal_request(gateway, key))[0] == 200


def test_a_connection_that_sends_nothing_is_closed_silently(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = gateway_factory([openai_channel(fake_openai)], limits={"header_timeout_s": 1.0})

    async def idle() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        started = time.monotonic()
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return data, time.monotonic() - started

    data, lived = asyncio.run(idle())
    assert data == b"" and 0.9 <= lived <= 6


def test_over_the_worker_connection_limit_is_an_openai_shaped_503(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = gateway_factory(
        [openai_channel(fake_openai)], limits={"max_connections_per_worker": 5}
    )

    async def scenario() -> httpx.Response:
        held = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(5)]
        try:
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient(timeout=10) as client:
                return await client.get(f"{gateway.url}/healthz")
        finally:
            for _, writer in held:
                writer.close()

    response = asyncio.run(scenario())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == {
        "message": "The gateway is at its connection limit; retry shortly.",
        "type": "service_unavailable",
        "param": None,
        "code": "server_overloaded",
    }
    # Once the held connections are gone, requests are served again.
    assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200


def burst_statuses(gateway: Gateway, key: str, count: int) -> list[int]:
    async def stream_one(client: httpx.AsyncClient) -> int:
        async with client.stream(
            "POST", f"{gateway.base_url}/chat/completions", json={**CHAT, "stream": True},
            headers={"authorization": f"Bearer {key}"},
        ) as response:  # fmt: skip
            body = await response.aread()
            if response.status_code == 429:
                assert orjson.loads(body)["error"]["code"] == "concurrency_limit_exceeded"
            return response.status_code

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(stream_one(client) for _ in range(count))))

    return sorted(asyncio.run(burst()))


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_keys_without_max_concurrent_get_the_default_cap(
    shared: bool,
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    request: pytest.FixtureRequest,
) -> None:
    channel = openai_channel(fake_openai, headers={"x-fake-chunk-delay": "0.15"})
    extra = {"redis_url": request.getfixturevalue("redis_url")} if shared else {}
    gateway = gateway_factory([channel], limits={"default_max_concurrent": 2}, **extra)
    key = gateway.create_key("no-own-limit")
    assert burst_statuses(gateway, key, 5) == [200, 200, 429, 429, 429]
    gateway.flush()  # settlements (which give the slots back) have run
    assert burst_statuses(gateway, key, 2) == [200, 200]
    # A key's own max_concurrent replaces the default.
    roomy = gateway.create_key("own-limit", max_concurrent=4)
    assert burst_statuses(gateway, roomy, 5) == [200, 200, 200, 200, 429]


def test_default_cap_zero_turns_it_off(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    channel = openai_channel(fake_openai, headers={"x-fake-chunk-delay": "0.15"})
    gateway = gateway_factory([channel], limits={"default_max_concurrent": 0})
    key = gateway.create_key("unlimited")
    assert burst_statuses(gateway, key, 5) == [200] * 5
