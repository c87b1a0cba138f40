"""A client that hangs up mid-stream pays for what the upstream generated, not what it saw.

The gateway reads the upstream on after the client has gone (bounded by
``timeouts.disconnect_drain_s`` and the channel's idle timeout) and bills the upstream's own
usage; when none comes, the reservation (never less than what was delivered). Every stream
translator is covered: the OpenAI pass-through, Azure, Anthropic, Gemini, and the Anthropic API
in front (``/v1/messages``). The upstream here keeps streaming after the disconnect and then
reports a large usage, as a reasoning model asked to think hard and answer briefly would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.core import RelayCall, StreamTranslator
from sluice.metering.quota import Reservation
from sluice.providers.anthropic_stream import AnthropicStreamTranslator
from sluice.providers.azure import AzureStreamTranslator
from sluice.providers.gemini_stream import GeminiStreamTranslator
from sluice.providers.openai import OpenAIStreamTranslator
from sluice.relay.drain import read_for_usage
from tests.conftest import GatewayFactory
from tests.fakes.scripted_sse_upstream import ScriptedSse
from tests.security.stream_scripts import HEAD, MODEL, OUTPUT, PROMPT, PROVIDERS, channel, script
from tests.support import Gateway, LoopThread

MAX_TOKENS = 100
# test-* prices: $1 in, $2 out per 1M tokens = 1 and 2 micro-dollars per token.
UPSTREAM_COST = PROMPT * 1 + OUTPUT * 2


@pytest.fixture
def upstream(loop_thread: LoopThread) -> Iterator[ScriptedSse]:
    fake = loop_thread.run(ScriptedSse().start())
    yield fake
    loop_thread.run(fake.stop())


def _settings(drain_s: float = 60.0, **extra: Any) -> dict[str, Any]:
    timeouts = {"connect_s": 1.0, "first_byte_s": 5.0, "idle_s": 5.0, "total_s": 30.0,
                "disconnect_drain_s": drain_s}  # fmt: skip
    return {"timeouts": timeouts, **extra}


def _reservations(gateway: Gateway) -> list[int]:
    """The amount each admission reserved (the ledger is in-process here)."""
    ledger = gateway.state.ledger
    original = ledger.reserve
    amounts: list[int] = []

    async def reserve(
        key_id: str, budget: int | None, spent_in_db: int, amount: int
    ) -> Reservation:
        reservation = await original(key_id, budget, spent_in_db, amount)
        amounts.append(reservation.amount)
        return reservation

    ledger.reserve = reserve  # type: ignore[method-assign]
    return amounts


def read_then_leave(gateway: Gateway, key: str, provider: str, **extra: Any) -> float:
    """Stream, hang up after ``HEAD`` content deltas; returns the time the client left."""
    messages = [{"role": "user", "content": "think hard, then answer in five tokens"}]
    payload = {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": True, "messages": messages,
               **extra}  # fmt: skip
    if provider == "anthropic-inbound":
        url, headers = f"{gateway.url}/v1/messages", {"x-api-key": key}
    else:
        url, headers = f"{gateway.base_url}/chat/completions", {"authorization": f"Bearer {key}"}
    seen = 0
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", url, json=payload, headers=headers) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if provider == "anthropic-inbound":
                    seen += line == "event: content_block_delta"
                else:
                    seen += '"content":"' in line and '"content":""' not in line
                if seen == HEAD:
                    break
    return time.monotonic()


def wait_for_row(gateway: Gateway, key: str, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        rows = gateway.usage_rows(key)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(rows) == 1, f"no usage row within {within_s}s"
    return rows[0]


def _check_closed_row(gateway: Gateway, key: str, row: dict[str, Any], cost: int) -> None:
    assert row["status"] == 499 and row["error_code"] == "client_closed_request"
    assert row["stream"] is True
    assert row["cost_micro"] == cost
    assert gateway.key_record(key).spent_micro == cost


@pytest.mark.parametrize("provider", PROVIDERS)
def test_disconnect_bills_the_upstream_usage_read_after_the_client_left(
    gateway_factory: GatewayFactory, upstream: ScriptedSse, provider: str
) -> None:
    upstream.script = script(provider, usage=True, hold_s=0.3)
    gateway = gateway_factory([channel(provider, upstream.url)], **_settings())
    key = gateway.create_key("leaver", budget_micro=10_000_000)
    read_then_leave(gateway, key, provider)
    row = wait_for_row(gateway, key, 10)
    _check_closed_row(gateway, key, row, UPSTREAM_COST)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT, OUTPUT)
    assert upstream.completed == 1 and upstream.disconnects == 0, "the upstream was not read on"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_disconnect_without_upstream_usage_bills_the_reservation(
    gateway_factory: GatewayFactory, upstream: ScriptedSse, provider: str
) -> None:
    upstream.script = script(provider, usage=False, hold_s=0.3)
    gateway = gateway_factory([channel(provider, upstream.url)], **_settings())
    reserved = _reservations(gateway)
    key = gateway.create_key("leaver", budget_micro=10_000_000)
    read_then_leave(gateway, key, provider)
    row = wait_for_row(gateway, key, 10)
    assert len(reserved) == 1
    _check_closed_row(gateway, key, row, reserved[0])
    assert row["completion_tokens"] >= MAX_TOKENS  # the reservation, not the two words seen
    assert upstream.completed == 1


def test_disconnect_bills_what_was_delivered_when_it_exceeds_the_reservation(
    gateway_factory: GatewayFactory, upstream: ScriptedSse
) -> None:
    """The floor: an upstream that ignores max_tokens and reports no usage is billed at least
    the text the client was shown (a guard of the rule; the old code billed exactly this)."""
    upstream.script = script("openai", usage=False, hold_s=0.3)
    long = " ".join(["lengthy"] * 200)
    upstream.script[1] = (0.0, upstream.script[1][1].replace(b'"Hel"', f'"{long}"'.encode()))
    gateway = gateway_factory([channel("openai", upstream.url)], **_settings())
    reserved = _reservations(gateway)
    key = gateway.create_key("leaver", budget_micro=10_000_000)
    read_then_leave(gateway, key, "openai", max_tokens=1)
    row = wait_for_row(gateway, key, 10)
    delivered = gateway.state.tokens.count_text(long + "lo")
    assert row["completion_tokens"] == delivered
    assert row["cost_micro"] > reserved[0]
    _check_closed_row(gateway, key, row, row["prompt_tokens"] + 2 * delivered)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_drain_is_bounded_by_the_setting_and_bills_the_reservation(
    gateway_factory: GatewayFactory, upstream: ScriptedSse, provider: str
) -> None:
    upstream.script = script(provider, usage=True, hold_s=3600)  # silent for an hour
    gateway = gateway_factory([channel(provider, upstream.url)], **_settings(drain_s=1.0))
    reserved = _reservations(gateway)
    key = gateway.create_key("leaver", budget_micro=10_000_000)
    left = read_then_leave(gateway, key, provider)
    row = wait_for_row(gateway, key, 5)
    assert time.monotonic() - left < 3.0
    _check_closed_row(gateway, key, row, reserved[0])
    assert upstream.completed == 0


def test_drain_is_bounded_by_the_channel_idle_timeout(
    gateway_factory: GatewayFactory, upstream: ScriptedSse
) -> None:
    upstream.script = script("openai", usage=True, hold_s=3600)
    config = channel("openai", upstream.url, idle_timeout_s=0.5)
    gateway = gateway_factory([config], **_settings(drain_s=60.0))
    reserved = _reservations(gateway)
    key = gateway.create_key("leaver", budget_micro=10_000_000)
    left = read_then_leave(gateway, key, "openai")
    row = wait_for_row(gateway, key, 5)
    assert time.monotonic() - left < 3.0
    _check_closed_row(gateway, key, row, reserved[0])


def test_zero_drain_bills_the_reservation_at_once(
    gateway_factory: GatewayFactory, upstream: ScriptedSse
) -> None:
    upstream.script = script("openai", usage=True, hold_s=0.3)
    gateway = gateway_factory([channel("openai", upstream.url)], **_settings(drain_s=0))
    reserved = _reservations(gateway)
    key = gateway.create_key("leaver", budget_micro=10_000_000)
    read_then_leave(gateway, key, "openai")
    row = wait_for_row(gateway, key, 2)
    _check_closed_row(gateway, key, row, reserved[0])


def test_shutdown_ends_a_drain_and_settles_it(
    gateway_factory: GatewayFactory, upstream: ScriptedSse, tmp_path: Path
) -> None:
    """A drain still waiting when the worker stops is cancelled after the shutdown grace and
    settles (the reservation) before the usage sink's last flush."""
    upstream.script = script("openai", usage=True, hold_s=3600)
    gateway = gateway_factory(
        [channel("openai", upstream.url)], **_settings(drain_s=60.0), shutdown_grace_s=0.5
    )
    reserved = _reservations(gateway)
    key = gateway.create_key("leaver", budget_micro=10_000_000)
    key_id = gateway.key_record(key).id
    read_then_leave(gateway, key, "openai")
    time.sleep(0.2)
    assert gateway.state.background, "the drain is not tracked"
    started = time.monotonic()
    gateway.stop()
    assert time.monotonic() - started < 10
    with sqlite3.connect(tmp_path / "sluice.db") as db:
        rows = db.execute(
            "SELECT status, cost_micro FROM usage WHERE key_id = ?", (key_id,)
        ).fetchall()
        spent = db.execute("SELECT spent_micro FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    assert rows == [(499, reserved[0])]
    assert spent == (reserved[0],)


def _translator(provider: str) -> StreamTranslator:
    if provider == "anthropic":
        call = RelayCall(endpoint="chat", path="/chat/completions", body={"messages": []},
                         raw_body=b"", requested_model=MODEL, upstream_model=MODEL, stream=True,
                         client_wants_usage=False)  # fmt: skip
        return AnthropicStreamTranslator(call)
    if provider == "gemini":
        return GeminiStreamTranslator(model=MODEL, n=1, include_usage=False)
    inner = OpenAIStreamTranslator(strip_usage_chunk=True)
    return AzureStreamTranslator(inner) if provider == "azure" else inner


@pytest.mark.parametrize("provider", ["openai", "azure", "anthropic", "gemini"])
@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
def test_a_drain_keeps_nothing_it_reads(provider: str, usage: bool) -> None:
    """Memory: a long answer read after the client left leaves no text or frames behind,
    only the usage (the upstream's, when it sends one)."""
    steps = script(provider, usage=usage, hold_s=0)
    head, rest = steps[:HEAD], steps[HEAD:]
    translator = _translator(provider)
    for _, data in head:
        translator.feed(data)
    middle = rest[:-3] * 500  # a long answer: thousands of content events

    async def upstream() -> AsyncIterator[bytes]:
        for _, data in [*middle, *rest[-3:]]:
            yield data

    assert asyncio.run(read_for_usage(translator, upstream(), 10.0)) is True
    assert translator.delivered_text() == ""
    expected = (PROMPT, OUTPUT) if usage else None
    found = translator.usage
    assert (found and (found.prompt, found.completion)) == expected
