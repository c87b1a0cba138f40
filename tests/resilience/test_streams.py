"""Timeouts and stream lifecycle: idle/total/first-byte limits, truncation, client disconnect.

A stream that fails after its first byte is never retried; it ends with an error event and the
key pays for what was delivered, counted locally when the upstream sent no usage. A client that
leaves mid-stream pays for what the upstream generated: the gateway reads on for its usage
(``timeouts.disconnect_drain_s``), else bills the reservation (tests/security has the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import PROMPT_TOKENS, FaultyUpstream
from tests.resilience.conftest import channel, fast_settings
from tests.resilience.helpers import chat, stream_events
from tests.support import Gateway

Make = Callable[[str], FaultyUpstream]


def _delivered(events: list[object]) -> str:
    text = ""
    for event in events:
        if isinstance(event, dict) and event.get("choices"):
            text += event["choices"][0]["delta"].get("content") or ""
    return text


def _check_billed_for_delivery(gateway: Gateway, key: str, status: int, text: str) -> None:
    rows = gateway.usage_rows(key)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == status and row["stream"] is True
    expected = gateway.state.tokens.count_text(text)
    assert row["completion_tokens"] == expected > 0, (row, text)
    assert row["cost_micro"] > 0
    assert gateway.key_record(key).spent_micro == row["cost_micro"]


def test_stalled_stream_times_out_with_error_event_and_bills_delivery(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a = faulty("a").set("stall")
    gateway = gateway_factory([channel(a, idle_timeout_s=0.5)], **fast_settings())
    key = gateway.create_key("stall", budget_micro=10_000_000)
    started = time.monotonic()
    response = chat(gateway, key, stream=True)
    assert response.status_code == 200 and time.monotonic() - started < 3
    events = stream_events(response)
    assert isinstance(events[-1], dict) and events[-1]["error"]["code"] == "upstream_timeout"
    assert _delivered(events) == "one two"
    _check_billed_for_delivery(gateway, key, 504, "one two")
    assert len(a.hits) == 1, "a stream that started is never retried"
    # Too late to retry, but it still counts against the channel's breaker.
    assert gateway.state.health.snapshot("a")["recent"]["by_kind"] == {"timeout": 1}


def test_total_timeout_per_channel_cuts_a_slow_stream(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a = faulty("a").set("none", chunk_delay_s=0.3)
    gateway = gateway_factory([channel(a, timeout_s=1.0)], **fast_settings())
    key = gateway.create_key("total", budget_micro=10_000_000)
    started = time.monotonic()
    response = chat(gateway, key, stream=True)
    elapsed = time.monotonic() - started
    events = stream_events(response)
    assert 0.9 < elapsed < 2.5
    assert isinstance(events[-1], dict) and events[-1]["error"]["code"] == "upstream_timeout"
    text = _delivered(events)
    assert text and text != "one two three four five six"
    _check_billed_for_delivery(gateway, key, 504, text)


def test_truncated_stream_ends_with_error_and_bills_delivery(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    a = faulty("a").set("truncate")
    gateway = gateway_factory([channel(a)], **fast_settings())
    key = gateway.create_key("truncate", budget_micro=10_000_000)
    response = chat(gateway, key, stream=True)
    events = stream_events(response)
    assert isinstance(events[-1], dict) and "error" in events[-1]
    assert "[DONE]" not in events
    rows = gateway.usage_rows(key)
    assert len(rows) == 1 and rows[0]["status"] >= 500
    _check_billed_for_delivery(gateway, key, rows[0]["status"], "one two")


def test_slow_first_byte_fails_over(gateway_factory: GatewayFactory, faulty: Make) -> None:
    a, b = faulty("a").set("slow_first_byte", delay_s=5.0), faulty("b")
    gateway = gateway_factory(
        [channel(a, priority=1, first_byte_timeout_s=0.3), channel(b)], **fast_settings()
    )
    key = gateway.create_key("ttfb", budget_micro=10_000_000)
    started = time.monotonic()
    response = chat(gateway, key, stream=True)
    assert response.status_code == 200
    assert _delivered(stream_events(response)) == "one two three four five six"
    assert time.monotonic() - started < 2.0
    assert len(a.hits) == len(b.hits) == 1
    row = gateway.usage_rows(key)[0]
    assert row["status"] == 200 and row["channel"] == "b"
    assert row["prompt_tokens"] == PROMPT_TOKENS and row["completion_tokens"] == 6


def test_long_first_byte_with_short_idle_gap(gateway_factory: GatewayFactory, faulty: Make) -> None:
    """A slow thinker (first byte 0.8 s) on a channel with a 0.3 s idle limit still answers;
    its idle limit then applies between chunks."""
    a = faulty("a").set("slow_first_byte", delay_s=0.8)
    gateway = gateway_factory(
        [channel(a, first_byte_timeout_s=2.0, idle_timeout_s=0.3)], **fast_settings()
    )
    key = gateway.create_key("thinker", budget_micro=10_000_000)
    response = chat(gateway, key, stream=True)
    assert _delivered(stream_events(response)) == "one two three four five six"
    a.set("stall")
    started = time.monotonic()
    events = stream_events(chat(gateway, key, stream=True))
    assert isinstance(events[-1], dict) and events[-1]["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 1.5


def _read_words_then_leave(gateway: Gateway, key: str, words: int) -> float:
    """Stream a chat answer, hang up after ``words`` content chunks; returns when it hung up."""
    payload = {"model": "test-resilience", "stream": True,
               "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
    seen = 0
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", f"{gateway.base_url}/chat/completions", json=payload,
                           headers={"authorization": f"Bearer {key}"}) as response:  # fmt: skip
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    seen += 1
                if seen == words:
                    break
    return time.monotonic()


def test_client_leaving_while_the_upstream_is_silent_closes_it_at_once(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    """The client leaves during a long gap between upstream chunks: the wait is cut short (the
    gateway does not learn of it only when the next chunk comes) and the upstream is read on
    for its usage no longer than ``disconnect_drain_s``; none comes, so the key is billed the
    reservation."""
    a = faulty("a").set("stall")  # two words, then nothing for an hour
    settings = fast_settings()
    settings["timeouts"] = {**settings["timeouts"], "disconnect_drain_s": 0.5}
    gateway = gateway_factory([channel(a, idle_timeout_s=30.0)], **settings)
    key = gateway.create_key("leaves-in-gap", budget_micro=10_000_000)
    _read_words_then_leave(gateway, key, 2)
    # Settled (and the upstream closed) once the drain gave up: the row is written within a
    # few usage-sink flushes after it, though the upstream would stay silent for 30 s.
    deadline = time.monotonic() + 1.25
    rows = gateway.usage_rows(key)
    while not rows and time.monotonic() < deadline:
        time.sleep(0.02)
        rows = gateway.usage_rows(key)
    assert len(rows) == 1, "the stream was not ended when the client left"
    assert rows[0]["status"] == 499 and rows[0]["error_code"] == "client_closed_request"
    # The reservation: the prompt estimate plus default_max_tokens, not the two words shown.
    assert rows[0]["completion_tokens"] >= 4096 and rows[0]["cost_micro"] > 4096 * 2


def test_client_disconnect_reads_the_upstream_on_and_bills_its_usage(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    """Billed for what the upstream generated (its usage chunk, read after the client left),
    not for the two words the client saw."""
    a = faulty("a").set("none", chunk_delay_s=0.2)
    gateway = gateway_factory([channel(a)], **fast_settings())
    key = gateway.create_key("disconnect", budget_micro=10_000_000)
    _read_words_then_leave(gateway, key, 2)
    deadline = time.monotonic() + 5
    rows = gateway.usage_rows(key)
    while not rows and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = gateway.usage_rows(key)
    assert len(rows) == 1 and rows[0]["status"] == 499
    assert rows[0]["error_code"] == "client_closed_request"
    assert a.completed_streams == 1 and not a.disconnected_at
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (PROMPT_TOKENS, 6)
    assert rows[0]["cost_micro"] == PROMPT_TOKENS * 1 + 6 * 2  # test-* prices: $1 / $2 per 1M
    assert gateway.key_record(key).spent_micro == rows[0]["cost_micro"]


def test_client_disconnect_cancels_upstream_within_a_second_without_drain(
    gateway_factory: GatewayFactory, faulty: Make
) -> None:
    """With ``disconnect_drain_s: 0`` the upstream is closed at once (it stops generating) and
    the key is billed the reservation."""
    a = faulty("a").set("none", chunk_delay_s=0.2)
    settings = fast_settings()
    settings["timeouts"] = {**settings["timeouts"], "disconnect_drain_s": 0}
    gateway = gateway_factory([channel(a)], **settings)
    key = gateway.create_key("disconnect", budget_micro=10_000_000)
    closed_at = _read_words_then_leave(gateway, key, 2)
    for _ in range(100):
        if a.disconnected_at:
            break
        time.sleep(0.02)
    assert a.disconnected_at, "the upstream never saw the connection close"
    lag = a.disconnected_at[0] - closed_at
    print(f"upstream saw the disconnect {lag * 1000:.0f} ms after the client left")
    assert lag < 1.0
    assert a.completed_streams == 0
    rows = gateway.usage_rows(key)
    assert len(rows) == 1 and rows[0]["status"] == 499
    assert rows[0]["error_code"] == "client_closed_request"
    # Billed the reservation (default_max_tokens), never only what the client read.
    assert rows[0]["completion_tokens"] >= 4096 and rows[0]["cost_micro"] > 4096 * 2
    assert gateway.key_record(key).spent_micro == rows[0]["cost_micro"]
