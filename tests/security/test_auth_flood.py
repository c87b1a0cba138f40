"""Floods of unknown API keys and admin-key guessing, from one client address.

Random ``sk-`` strings must not cost a database read each nor evict real keys from the key
cache; past ``auth.max_failures`` failed authentications an address gets 429
``too_many_failed_auth`` without any read. Addresses are real: the clients bind distinct
loopback source addresses (127.0.0.2 attacks, 127.0.0.3 is a bystander), so nothing here
depends on forwarding headers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from sluice.keys import hash_key
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import ADMIN_KEY, Gateway

ATTACKER = "127.0.0.2"
BYSTANDER = "127.0.0.3"
FLOOD = 2000
LIMIT = 20
BODY = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


class KeyReads:
    """Every database read of an API key by hash (a hook on the gateway's own engine)."""

    def __init__(self, gateway: Gateway) -> None:
        self._engine = gateway.state.engine.sync_engine
        self.params: list[str] = []
        event.listen(self._engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM api_keys" in statement and "WHERE api_keys.key_hash" in statement:
            self.params.append(repr(params))

    def of(self, secret: str) -> int:
        digest = hash_key(secret)
        return sum(digest in p for p in self.params)

    def __len__(self) -> int:
        return len(self.params)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


@pytest.fixture
def reads_of() -> Iterator[Callable[[Gateway], KeyReads]]:
    hooks: list[KeyReads] = []

    def attach(gateway: Gateway) -> KeyReads:
        hooks.append(KeyReads(gateway))
        return hooks[-1]

    yield attach
    for hook in hooks:
        hook.close()


def _gateway(factory: GatewayFactory, fake: FakeOpenAI, **auth: Any) -> Gateway:
    # A long key TTL: the bystander's key is read once, however slow the box.
    return factory(
        [openai_channel(fake)],
        auth={"max_failures": LIMIT, **auth},
        limits={"key_cache_ttl_s": 60},
    )


def _client(gateway: Gateway, address: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=gateway.url, transport=transport, timeout=30)


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def _random_key(length: int = 48) -> str:
    return "sk-" + secrets.token_hex(length)[:length]


# One case per shape of flood: header, key length, route.
FLOODS: dict[str, Callable[[], tuple[str, str, dict[str, str]]]] = {
    "bearer-chat": lambda: ("POST", "/v1/chat/completions", _bearer(_random_key())),
    "x-api-key-chat": lambda: ("POST", "/v1/chat/completions", {"x-api-key": _random_key()}),
    "api-key-longest": lambda: ("POST", "/v1/chat/completions", {"api-key": _random_key(197)}),
    "bearer-models": lambda: ("GET", "/v1/models", _bearer(_random_key())),
    "x-api-key-messages": lambda: ("POST", "/v1/messages", {"x-api-key": _random_key()}),
}


async def _flood(
    gateway: Gateway, shape: Callable[[], tuple[str, str, dict[str, str]]], valid: str
) -> tuple[list[httpx.Response], list[int]]:
    responses: list[httpx.Response] = []
    bystander: list[int] = []
    done = asyncio.Event()
    async with _client(gateway, ATTACKER) as attacker, _client(gateway, BYSTANDER) as other:

        async def attack(count: int) -> None:
            for _ in range(count):
                method, path, headers = shape()
                body = BODY if method == "POST" else None
                responses.append(await attacker.request(method, path, json=body, headers=headers))

        async def watch() -> None:
            while not done.is_set():
                got = await other.get("/v1/models", headers=_bearer(valid))
                bystander.append(got.status_code)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(attack(FLOOD // 50) for _ in range(50)))  # 50 at a time
        done.set()
        await watcher
    return responses, bystander


@pytest.mark.parametrize("shape", list(FLOODS), ids=list(FLOODS))
def test_flood_of_unknown_keys_costs_at_most_the_limit_in_reads(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    reads_of: Callable[[Gateway], KeyReads],
    shape: str,
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, window_s=60)
    valid = gateway.create_key("bystander")
    reads = reads_of(gateway)
    responses, bystander = asyncio.run(_flood(gateway, FLOODS[shape], valid))

    assert len(responses) == FLOOD
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {401, 429}, sorted(set(statuses))
    refused = [r for r in responses if r.status_code == 429]
    # Every 401 cost one read; nothing else did (the bystander's key: one read, its first use).
    assert len(reads) - reads.of(valid) == statuses.count(401) <= LIMIT
    assert reads.of(valid) == 1
    assert len(refused) >= FLOOD - LIMIT
    for response in refused:
        error = response.json()["error"]
        assert error["type"] == "rate_limit_error"
        if not shape.endswith("messages"):  # the Anthropic API's errors carry no code
            assert error["code"] == "too_many_failed_auth"
        assert 1 <= int(response.headers["retry-after"]) <= 60
    # The bystander (another address) was served throughout, from the cache.
    assert bystander and set(bystander) == {200}
    assert gateway.state.key_cache.cached(hash_key(valid))
    assert gateway.state.key_cache.sizes[1] <= LIMIT  # the unknown-key map holds only reads


def test_throttled_address_keeps_cached_keys_and_gets_no_reads(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    reads_of: Callable[[Gateway], KeyReads],
) -> None:
    """Behind one NAT: the address that failed keeps its cached keys; new keys wait."""
    gateway = _gateway(gateway_factory, fake_openai, max_failures=5)
    used, fresh = gateway.create_key("used"), gateway.create_key("fresh")
    reads = reads_of(gateway)

    async def scenario() -> dict[str, list[int]]:
        seen: dict[str, list[int]] = {}
        async with _client(gateway, ATTACKER) as office, _client(gateway, BYSTANDER) as other:
            seen["used-before"] = [
                (await office.get("/v1/models", headers=_bearer(used))).status_code
            ]
            seen["guesses"] = [
                (await office.get("/v1/models", headers=_bearer(_random_key()))).status_code
                for _ in range(8)
            ]
            seen["used-after"] = [
                (await office.get("/v1/models", headers=_bearer(used))).status_code
            ]
            seen["fresh-here"] = [
                (await office.get("/v1/models", headers=_bearer(fresh))).status_code
            ]
            seen["fresh-there"] = [
                (await other.get("/v1/models", headers=_bearer(fresh))).status_code
            ]
            seen["fresh-here-now-cached"] = [
                (await office.get("/v1/models", headers=_bearer(fresh))).status_code
            ]
        return seen

    seen = asyncio.run(scenario())
    assert seen == {
        "used-before": [200],
        "guesses": [401] * 5 + [429] * 3,
        "used-after": [200],
        "fresh-here": [429],
        "fresh-there": [200],
        "fresh-here-now-cached": [200],
    }
    assert reads.of(fresh) == 1 and reads.of(used) == 1
    assert len(reads) == 2 + 5


def test_throttle_window_expires(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    reads_of: Callable[[Gateway], KeyReads],
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, max_failures=3, window_s=1.0)
    reads = reads_of(gateway)

    async def guesses(n: int) -> list[httpx.Response]:
        async with _client(gateway, ATTACKER) as client:
            return [
                await client.get("/v1/models", headers=_bearer(_random_key())) for _ in range(n)
            ]

    first = asyncio.run(guesses(5))
    assert [r.status_code for r in first] == [401, 401, 401, 429, 429]
    assert first[-1].headers["retry-after"] == "1"
    time.sleep(1.1)
    again = asyncio.run(guesses(4))
    assert [r.status_code for r in again] == [401, 401, 401, 429]
    assert len(reads) == 6


def test_repeating_one_unknown_key_is_not_throttled(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    reads_of: Callable[[Gateway], KeyReads],
) -> None:
    """A client retrying a revoked key is answered from the unknown-key cache: one read, and
    it never locks its address (and the office behind it) out."""
    gateway = _gateway(gateway_factory, fake_openai, max_failures=3)
    reads = reads_of(gateway)
    revoked = _random_key()

    async def retries() -> list[int]:
        async with _client(gateway, ATTACKER) as client:
            return [
                (await client.get("/v1/models", headers=_bearer(revoked))).status_code
                for _ in range(50)
            ]

    assert asyncio.run(retries()) == [401] * 50
    assert reads.of(revoked) == 1


MALFORMED = {
    "no-prefix": "not-a-sluice-key-at-all-0123456789",
    "too-short": "sk-1234",
    "too-long": "sk-" + "a" * 300,
    "upstream-style": "AIzaSyA-0123456789-abcdefghijklmnop",
}


@pytest.mark.parametrize("secret", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_keys_cost_no_read_and_are_not_counted(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    reads_of: Callable[[Gateway], KeyReads],
    secret: str,
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, max_failures=3)
    reads = reads_of(gateway)
    statuses = [
        httpx.get(f"{gateway.url}/v1/models", headers=_bearer(secret), timeout=10).status_code
        for _ in range(10)
    ]
    assert statuses == [401] * 10
    assert len(reads) == 0


# -- the admin key --------------------------------------------------------------------------

ADMIN_GUESSES: dict[str, Callable[[int], str]] = {
    "random": lambda i: _random_key(),
    "near-miss": lambda i: ADMIN_KEY[:-1] + chr(ord("a") + i % 26),
    "prefix": lambda i: ADMIN_KEY[: 4 + i],
    "longer": lambda i: ADMIN_KEY + str(i),
}


@pytest.mark.parametrize("guess", list(ADMIN_GUESSES), ids=list(ADMIN_GUESSES))
def test_admin_key_guessing_is_throttled(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, guess: str
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, max_failures=5)

    async def scenario() -> tuple[list[httpx.Response], int, int]:
        async with _client(gateway, ATTACKER) as attacker, _client(gateway, BYSTANDER) as admin:
            tries = [
                await attacker.get("/admin/keys", headers=_bearer(ADMIN_GUESSES[guess](i)))
                for i in range(8)
            ]
            right_here = await attacker.get("/admin/keys", headers=_bearer(ADMIN_KEY))
            right_there = await admin.get("/admin/keys", headers=_bearer(ADMIN_KEY))
            return tries, right_here.status_code, right_there.status_code

    tries, right_here, right_there = asyncio.run(scenario())
    assert [r.status_code for r in tries] == [401] * 5 + [429] * 3
    assert {r.json()["error"]["code"] for r in tries[:5]} == {"invalid_admin_key"}
    for response in tries[5:]:
        assert response.json()["error"]["code"] == "too_many_failed_auth"
        assert 1 <= int(response.headers["retry-after"]) <= 60
    # Even the right key is refused from the guessing address (no oracle), not elsewhere.
    assert right_here == 429
    assert right_there == 200


def test_admin_throttle_window_expires(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, max_failures=2, window_s=1.0)

    async def attempt(secret: str) -> int:
        async with _client(gateway, ATTACKER) as client:
            return (await client.get("/admin/keys", headers=_bearer(secret))).status_code

    assert [asyncio.run(attempt("sk-wrong-admin-guess")) for _ in range(3)] == [401, 401, 429]
    assert asyncio.run(attempt(ADMIN_KEY)) == 429
    time.sleep(1.1)
    assert asyncio.run(attempt(ADMIN_KEY)) == 200
