"""Upstream size caps (issue 16): a hostile or broken upstream cannot make a worker hold an
unbounded body or SSE event, nor make the SSE splitter do quadratic work.

Non-stream bodies are capped by ``limits.max_upstream_body_bytes`` (after decompression), one SSE
event by ``limits.max_upstream_event_bytes``; past either the request ends with a 502
``upstream_response_too_large`` (an error event when the stream has already started), the
upstream connection is closed, and the reservation is released exactly once.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import threading
import time
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from sluice.providers.sse import SseEventTooLarge, SseSplitter, parse_span
from tests.conftest import GatewayFactory
from tests.security.conftest import Make
from tests.security.scripted_upstream import ScriptedUpstream, openai_reply
from tests.support import Gateway

MiB = 1024 * 1024
UPSTREAM_KEY = "sk-upstream-CAPS-secret-27272727"


# --- the splitter ------------------------------------------------------------------------------


def _split_within(splitter: SseSplitter, data: bytes, piece: int, budget_s: float) -> float:
    """Feed ``data`` in ``piece``-byte reads; fail as soon as ``budget_s`` is spent (so the
    quadratic version fails in seconds instead of running for minutes)."""
    reads = [data[offset : offset + piece] for offset in range(0, len(data), piece)]
    started = time.perf_counter()
    spans: list[bytes] = []
    for index, read in enumerate(reads):
        span = splitter.take_complete(read)
        if span:
            spans.append(span)
        if not index % 4096 and time.perf_counter() - started > budget_s:
            pytest.fail(f"still splitting at read {index} of {len(reads)} after {budget_s} s")
    elapsed = time.perf_counter() - started
    events = parse_span(b"\n\n".join(spans))
    assert len(events) == 2 and events[0].data == b"1" and len(events[1].data) > len(data) // 2
    return elapsed


@pytest.mark.parametrize("piece", [1, 3, 16, 64])
def test_big_event_in_small_reads_is_split_in_linear_time(piece: int) -> None:
    # 131,072 reads whatever the piece size: 128 KiB in 1-byte reads ... 8 MiB in 64-byte reads.
    # The old splitter joined and searched the whole pending buffer on every read: 2 MiB in
    # 16-byte pieces copied ~17 GB (minutes); this must take a fraction of a second.
    size = 131_072 * piece
    event = b"data: 1\n\n" + b"data: " + b"x" * (size - 17) + b"\n\n"
    elapsed = _split_within(SseSplitter(limit=16 * MiB), event, piece, budget_s=3.0)
    assert elapsed < 1.0, f"{size} bytes in {piece}-byte reads took {elapsed:.2f} s"


def test_big_crlf_event_in_small_reads_is_linear() -> None:
    event = b"data: 1\r\n\r\n" + b"data: " + b"y" * (2 * MiB) + b"\r\n\r\n"
    elapsed = _split_within(SseSplitter(limit=16 * MiB), event, 16, budget_s=3.0)
    assert elapsed < 1.0


STREAMS = {
    "lf": b"".join(b'data: {"n": %d}\n\n' % i for i in range(200)) + b"data: [DONE]\n\n",
    "crlf": b"".join(b'data: {"n": %d}\r\n\r\n' % i for i in range(200)) + b"data: [DONE]\r\n\r\n",
    "mixed": b"event: a\r\ndata: 1\n\ndata: 2\r\n\ndata: 3\n\r\n: comment\r\ndata: 4\r\n\r\n"
    b"data: 5\n\n",
    "multiline": b"data: a\ndata: b\n\nid: 7\ndata: c\n\n",
}


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("seed", range(4))
def test_any_split_gives_the_same_events(name: str, seed: int) -> None:
    stream = STREAMS[name]
    whole = SseSplitter()
    expected = whole.feed(stream) + whole.flush()
    rng = random.Random(seed)
    splitter, got, at = SseSplitter(limit=1024), [], 0
    while at < len(stream):
        step = rng.choice([1, 1, 2, 3, 5, 64])
        got += splitter.feed(stream[at : at + step])
        at += step
    assert got + splitter.flush() == expected and expected


@pytest.mark.parametrize(
    "reads",
    [
        pytest.param([b"data: " + b"x" * 2000], id="one read, no separator"),
        pytest.param([b"data: "] + [b"x" * 10] * 200, id="many reads, no separator"),
        pytest.param([b"data: 1\n\ndata: " + b"x" * 2000 + b"\n\ndata: 2\n\n"], id="one read"),
        pytest.param([b"data: " + b"x" * 1000, b"x" * 1000 + b"\n\n"], id="completed late"),
        pytest.param([b"data: 1\n\ndata: " + b"x" * 1020, b"x" * 20], id="after an event"),
    ],
)
def test_event_over_the_limit_raises(reads: list[bytes]) -> None:
    splitter = SseSplitter(limit=1024)
    with pytest.raises(SseEventTooLarge):
        for data in reads:
            splitter.take_complete(data)


def test_many_small_events_are_not_one_big_one() -> None:
    splitter = SseSplitter(limit=1024)
    events = []
    for _ in range(1000):
        events += splitter.feed(b"data: " + b"z" * 500 + b"\n\n")
    assert len(events) == 1000
    assert len(splitter.feed(b"data: 1\n\n" * 2000)) == 2000  # one read far over the limit


# --- through the gateway ---------------------------------------------------------------------


def _channel(upstream: ScriptedUpstream, kind: str = "openai-compatible") -> dict[str, Any]:
    return {
        "name": "up",
        "type": kind,
        "base_url": upstream.v1 if kind == "openai-compatible" else upstream.base_url,
        "api_key": UPSTREAM_KEY,
        "models": ["test-big"],
    }


def _gateway(gateway_factory: GatewayFactory, upstream: ScriptedUpstream,
             kind: str = "openai-compatible", **limits: int) -> Gateway:  # fmt: skip
    return gateway_factory(
        [_channel(upstream, kind)],
        limits=limits,
        timeouts={"connect_s": 2, "first_byte_s": 5, "idle_s": 5, "total_s": 60},
    )


def _post(gateway: Gateway, key: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": "test-big", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=60,
                      headers={"authorization": f"Bearer {key}"})  # fmt: skip


def _reserved(gateway: Gateway, key: str) -> int:
    """What the in-process ledger still holds for the key (released twice would go below 0)."""
    record = gateway.key_record(key)
    account = gateway.state.ledger._accounts.get(record.id)  # type: ignore[attr-defined]
    return 0 if account is None else int(account.reserved)


def _check_released_once(gateway: Gateway, key: str, code: str) -> list[dict[str, Any]]:
    """One usage row, and the reservation back to zero: released, not charged, not twice."""
    rows = gateway.usage_rows(key)
    assert len(rows) == 1 and rows[0]["status"] == 502 and rows[0]["error_code"] == code, rows
    assert _reserved(gateway, key) == 0, "the reservation is still held, or released twice"
    return rows


class PeakRss:
    """Highest resident set size of this process (gateway and fakes run in it) while active."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def _big_json(size: int) -> bytes:
    filler = "x" * (size - 300)
    return bytes(openai_reply("test-big", filler).body)  # type: ignore[arg-type]


async def _send_in_pieces(request: web.Request, payload: bytes, headers: dict[str, str],
                          *, chunked: bool) -> web.StreamResponse:  # fmt: skip
    response = web.StreamResponse(headers=headers)
    if not chunked:
        response.content_length = len(payload)
    try:
        await response.prepare(request)
        for offset in range(0, len(payload), 256 * 1024):
            await response.write(payload[offset : offset + 256 * 1024])
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # Sluice hung up once it had seen enough
    return response


BODIES = ["content-length", "chunked", "gzip"]


@pytest.mark.parametrize("framing", BODIES)
def test_oversized_body_is_a_502_and_memory_stays_bounded(
    gateway_factory: GatewayFactory, scripted: Make, framing: str
) -> None:
    payload = _big_json(20 * MiB)
    headers = {"content-type": "application/json"}
    if framing == "gzip":
        payload = gzip.compress(payload, 1)  # ~60 KiB on the wire, 20 MiB once inflated
        headers["content-encoding"] = "gzip"

    async def handle(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await _send_in_pieces(request, payload, headers, chunked=framing == "chunked")

    upstream = scripted(handle)
    gateway = _gateway(gateway_factory, upstream, max_upstream_body_bytes=MiB)
    key = gateway.create_key("big", budget_micro=10_000_000)
    _post(gateway, key)  # warm up: connections, imports, caches
    gateway.flush()
    before = len(gateway.usage_rows(key))
    with PeakRss() as rss:
        response = _post(gateway, key)
    assert response.status_code == 502, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_response_too_large" and error["type"] == "upstream_error"
    assert UPSTREAM_KEY not in response.text
    # The old code read all 20 MiB (and parsed and returned it): 40+ MiB more at its peak.
    assert rss.peak - rss.start < 12 * MiB, f"RSS grew {(rss.peak - rss.start) / MiB:.1f} MiB"
    rows = gateway.usage_rows(key)
    assert len(rows) == before + 1
    assert rows[-1]["status"] == 502 and rows[-1]["error_code"] == "upstream_response_too_large"
    assert rows[-1]["cost_micro"] == 0
    assert _reserved(gateway, key) == 0 and gateway.key_record(key).spent_micro == 0
    assert gateway.state.health.snapshot("up")["state"] == "closed", "not the channel's fault"


def test_body_under_the_cap_passes(gateway_factory: GatewayFactory, scripted: Make) -> None:
    payload = _big_json(MiB - 4096)

    async def handle(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await _send_in_pieces(request, payload, {"content-type": "application/json"},
                                     chunked=True)  # fmt: skip

    gateway = _gateway(gateway_factory, scripted(handle), max_upstream_body_bytes=MiB)
    response = _post(gateway, gateway.create_key("ok"))
    assert response.status_code == 200 and len(response.content) == len(payload)


def _openai_chunk(text: str) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "test-big",
             "choices": [choice]}  # fmt: skip
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _anthropic_start() -> bytes:
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message",
             "role": "assistant", "model": "test-big", "content": [], "stop_reason": None,
             "usage": {"input_tokens": 5, "output_tokens": 0}}}  # fmt: skip
    block = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}}  # fmt: skip
    delta = {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "hello"}}  # fmt: skip
    events: list[dict[str, Any]] = [start, block, delta]
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e))
                    for e in events)  # fmt: skip


def _gemini_start() -> bytes:
    chunk = {
        "candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "hello"}]}}]
    }
    return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"


PRELUDES: dict[str, bytes] = {
    "openai-compatible": _openai_chunk("hello") * 3,
    "anthropic": _anthropic_start(),
    "gemini": _gemini_start(),
}


class EndlessEvent:
    """Sends ``prelude`` (complete events), then one event that never ends, in 64 KiB writes,
    until Sluice hangs up (or 64 MiB: the old code buffered it all and waited)."""

    def __init__(self, prelude: bytes) -> None:
        self.prelude = prelude
        self.sent = 0
        self.hung_up = asyncio.Event()

    async def __call__(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        piece = b"x" * (64 * 1024)
        try:
            await response.write(self.prelude + b'data: {"huge": "')
            while self.sent < 64 * MiB:
                await response.write(piece)
                self.sent += len(piece)
        except (ConnectionError, RuntimeError):
            self.hung_up.set()
        return response


@pytest.mark.parametrize("kind", sorted(PRELUDES))
@pytest.mark.parametrize("started", [False, True], ids=["before first frame", "mid-stream"])
def test_endless_sse_event_ends_the_stream(
    gateway_factory: GatewayFactory, scripted: Make, kind: str, started: bool
) -> None:
    fake = EndlessEvent(PRELUDES[kind] if started else b"")
    gateway = _gateway(gateway_factory, scripted(fake), kind, max_upstream_event_bytes=MiB)
    key = gateway.create_key("sse", budget_micro=10_000_000)
    began = time.monotonic()
    response = _post(gateway, key, stream=True)
    assert time.monotonic() - began < 20
    if not started:
        assert response.status_code == 502, response.text[:300]
        assert response.json()["error"]["code"] == "upstream_response_too_large"
    else:
        assert response.status_code == 200
        blocks = [b for b in response.text.split("\n\n") if b.startswith("data: ")]
        assert "hello" in response.text and "[DONE]" not in response.text
        last = orjson.loads(blocks[-1][6:])
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert last["error"]["code"] == "upstream_response_too_large"
    assert fake.sent < 8 * MiB, f"Sluice read {fake.sent / MiB:.0f} MiB of one event"
    rows = _check_released_once(gateway, key, "upstream_response_too_large")
    assert gateway.key_record(key).spent_micro == rows[0]["cost_micro"]
    if not started:
        assert rows[0]["cost_micro"] == 0


def test_many_events_past_the_event_cap_still_stream(gateway_factory: GatewayFactory,
                                                     scripted: Make) -> None:  # fmt: skip
    """The cap is per event: a 3 MiB stream of small chunks passes a 1 MiB cap untouched."""
    chunks = [_openai_chunk(f"w{i} ") for i in range(30_000)]
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "test-big",
             "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 30000,
                                      "total_tokens": 30005}}  # fmt: skip
    stream = b"".join(chunks) + b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n"
    assert len(stream) > 3 * MiB

    async def handle(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for offset in range(0, len(stream), 7_000):  # reads that split events anywhere
            await response.write(stream[offset : offset + 7_000])
        await response.write_eof()
        return response

    gateway = _gateway(gateway_factory, scripted(handle), max_upstream_event_bytes=MiB)
    response = _post(gateway, gateway.create_key("many"), stream=True)
    assert response.status_code == 200
    assert response.content == b"".join(chunks) + b"data: [DONE]\n\n"
