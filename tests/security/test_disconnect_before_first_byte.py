"""A client that hangs up before the stream's first byte pays like one that hangs up later.

A reasoning model may think for a long while before its first chunk; a client that leaves in
that pause must not get the thinking for free. The gateway does not abandon the upstream when
the client goes before anything was sent: the stream is started, read on for the upstream's
usage (``relay/drain.py``) and billed as a 499 with that usage.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.scripted_sse_upstream import ScriptedSse
from tests.security.stream_scripts import MODEL, OUTPUT, PROMPT, channel, script
from tests.security.test_stream_disconnect_billing import UPSTREAM_COST, wait_for_row
from tests.support import LoopThread

THINKING_S = 1.0  # the upstream's silence before its first event; the client leaves in it


@pytest.fixture
def upstream(loop_thread: LoopThread) -> Iterator[ScriptedSse]:
    fake = loop_thread.run(ScriptedSse().start())
    yield fake
    loop_thread.run(fake.stop())


def _post_then_leave(url: str, path: str, key: str, body: dict[str, object]) -> None:
    """Send a streaming request on a raw socket and close it before any answer arrives."""
    host, port = url.removeprefix("http://").split(":")
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {key}\r\n"
        f"x-api-key: {key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + payload)
        time.sleep(THINKING_S / 3)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "anthropic-inbound"])
def test_leaving_before_the_first_byte_bills_the_upstream_usage(
    gateway_factory: GatewayFactory, upstream: ScriptedSse, provider: str
) -> None:
    steps = script(provider, usage=True, hold_s=0.05)
    upstream.script = [(THINKING_S, steps[0][1]), *steps[1:]]
    timeouts = {"connect_s": 1.0, "first_byte_s": 5.0, "idle_s": 5.0, "total_s": 30.0}
    gateway = gateway_factory([channel(provider, upstream.url)], timeouts=timeouts)
    key = gateway.create_key("thinker", budget_micro=10_000_000)
    body: dict[str, object] = {
        "model": MODEL,
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "think for a long time, answer briefly"}],
    }
    path = "/v1/messages" if provider == "anthropic-inbound" else "/v1/chat/completions"
    _post_then_leave(gateway.url, path, key, body)
    row = wait_for_row(gateway, key, 10)
    assert row["status"] == 499 and row["error_code"] == "client_closed_request"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT, OUTPUT)
    assert row["cost_micro"] == UPSTREAM_COST
    assert gateway.key_record(key).spent_micro == UPSTREAM_COST
    assert upstream.completed == 1, "the upstream was abandoned when the client left"
