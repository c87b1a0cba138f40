"""The relay engine against the in-memory upstream (``sluice.upstream_mock``): no sockets.

Everything from admission to settlement is the real code; only the upstream HTTP is canned
(``tests/mock_gateway.py``: channels ``a``, tried first, and ``b``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from sluice.upstream_mock import MockReply, sse
from tests.mock_gateway import (
    KEY_A,
    MODEL,
    MockGateway,
    answer,
    chunk,
    completion,
    mock_gateway,
    usage_chunk,
)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[MockGateway]:
    async with mock_gateway(tmp_path) as gw:
        yield gw


async def test_success_is_relayed_and_billed(gateway: MockGateway) -> None:
    gateway.routes["a"] = answer(MockReply(200, completion("hello")))
    response = await gateway.chat()
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello"
    sent = gateway.upstream.requests
    assert len(sent) == 1 and sent[0].url == "http://a.mock/v1/chat/completions"
    assert sent[0].headers["authorization"] == f"Bearer {KEY_A}"
    assert sent[0].headers["x-request-id"] == response.headers["x-request-id"]
    assert gateway.upstream.responses[0].released  # read to the end: connection reused
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["channel"]) == (200, "a")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1000, 500)
    assert row["cost_micro"] == 1000 * 1 + 500 * 2  # $1 / $2 per million tokens


async def test_failover_to_the_second_channel_on_503(gateway: MockGateway) -> None:
    overloaded = b'{"error": {"message": "overloaded", "type": "server_error"}}'
    gateway.routes["a"] = answer(MockReply(503, overloaded))
    gateway.routes["b"] = answer(MockReply(200, completion("from b")))
    response = await gateway.chat()
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "from b"
    assert [gateway.channel_of(r) for r in gateway.upstream.requests] == ["a", "b"]
    assert gateway.upstream.responses[0].closed  # the error answer's connection dropped
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["channel"]) == (200, "b")


async def test_client_error_is_returned_and_not_retried(gateway: MockGateway) -> None:
    invalid = {"error": {"message": "Unknown parameter: 'foo'.", "type": "invalid_request_error",
                         "param": "foo", "code": "unknown_parameter"}}  # fmt: skip
    gateway.routes["a"] = answer(MockReply(400, orjson.dumps(invalid)))
    gateway.routes["b"] = answer(MockReply(200, completion()))
    response = await gateway.chat(foo=1)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("foo", "unknown_parameter")
    assert "Unknown parameter" in error["message"]
    assert len(gateway.upstream.requests) == 1  # b never asked
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["cost_micro"]) == (400, 0)


async def test_stream_fails_over_until_a_first_frame_is_good(gateway: MockGateway) -> None:
    """A stream whose first event is an error has sent nothing to the client yet: next channel."""
    broken = sse('{"error": {"message": "model crashed", "type": "server_error"}}', done=False)
    gateway.routes["a"] = answer(MockReply(200, chunks=broken))
    gateway.routes["b"] = answer(MockReply(200, chunks=sse(chunk("Hel"), chunk("lo"))))
    response = await gateway.chat(stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    texts = [orjson.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1]]
    assert texts == ["Hel", "lo"]
    assert [gateway.channel_of(r) for r in gateway.upstream.requests] == ["a", "b"]
    assert gateway.upstream.responses[0].closed
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["channel"]) == (200, "b")


async def test_channel_key_in_an_upstream_error_is_masked(gateway: MockGateway) -> None:
    message = f"Incorrect request for key {KEY_A}: bad 'messages'."
    leaky = {"error": {"message": message, "type": "invalid_request_error", "param": "messages"}}
    gateway.routes["a"] = answer(MockReply(400, orjson.dumps(leaky)))
    response = await gateway.chat()
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "Incorrect request for key" in message and "bad 'messages'" in message
    assert KEY_A not in response.text and KEY_A[:20] not in response.text


def assert_internal_error(response: httpx.Response, caplog: pytest.LogCaptureFixture) -> None:
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "The gateway hit an internal error; it has been logged.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert "presenting bug" not in response.text  # the traceback stays in the server log
    logged = [r for r in caplog.records if r.exc_info and "internal error" in r.getMessage()]
    assert len(logged) == 1
    exc_info = logged[0].exc_info
    assert exc_info is not None
    assert "presenting bug" in "".join(str(e) for e in _causes(exc_info[1]))


def _causes(exc: BaseException | None) -> list[BaseException]:
    chain = []
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__
    return chain


async def test_a_crash_after_a_paid_answer_is_a_500_with_its_usage(
    gateway: MockGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a client disconnect: the row is a 500 billed what the upstream reported."""
    import sluice.relay.engine as engine

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("presenting bug")

    monkeypatch.setattr(engine, "json_response", broken)
    gateway.routes["a"] = answer(MockReply(200, completion("hello", 1000, 500)))
    response = await gateway.chat()
    assert_internal_error(response, caplog)
    assert len(gateway.upstream.requests) == 1  # a bug is not retried on another channel
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["error_code"], row["channel"]) == (500, "internal_error", "a")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1000, 500)
    assert row["cost_micro"] == 1000 * 1 + 500 * 2


async def test_a_translator_crash_before_the_first_frame_is_a_500_with_its_usage(
    gateway: MockGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sluice.providers.openai import OpenAIStreamTranslator

    feed = OpenAIStreamTranslator.feed

    def broken(self: OpenAIStreamTranslator, data: bytes) -> list[bytes]:
        feed(self, data)  # the usage is read, then the bug strikes
        raise RuntimeError("presenting bug")

    monkeypatch.setattr(OpenAIStreamTranslator, "feed", broken)
    stream = b"".join(sse(chunk("Hi"), usage_chunk(300, 200)))  # one read: usage included
    gateway.routes["a"] = answer(MockReply(200, chunks=[stream]))
    response = await gateway.chat(stream=True, stream_options={"include_usage": True})
    assert_internal_error(response, caplog)
    assert gateway.upstream.responses[0].closed
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["error_code"], row["stream"]) == (500, "internal_error", True)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (300, 200)
    assert row["cost_micro"] == 300 * 1 + 200 * 2


async def test_a_bug_before_any_upstream_answer_is_a_500_at_no_cost(
    gateway: MockGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sluice.providers.openai import OpenAIAdapter

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("presenting bug")

    monkeypatch.setattr(OpenAIAdapter, "build_request", broken)
    response = await gateway.chat()
    assert_internal_error(response, caplog)
    assert gateway.upstream.requests == []
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["error_code"], row["cost_micro"]) == (500, "internal_error", 0)


async def test_a_translator_crash_mid_stream_is_a_500_with_its_usage(
    gateway: MockGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After the first frame the status is sent: the client gets an error event instead of
    the rest, and the row is still a 500 billed the usage the upstream reported."""
    from sluice.providers.openai import OpenAIStreamTranslator

    feed = OpenAIStreamTranslator.feed

    def broken(self: OpenAIStreamTranslator, data: bytes) -> list[bytes]:
        frames = feed(self, data)
        if b'"usage"' in data:
            raise RuntimeError("presenting bug")
        return frames

    monkeypatch.setattr(OpenAIStreamTranslator, "feed", broken)
    rest = b"".join(sse(chunk("lo"), usage_chunk(300, 200)))
    gateway.routes["a"] = answer(MockReply(200, chunks=[*sse(chunk("Hel"), done=False), rest]))
    response = await gateway.chat(stream=True)
    assert response.status_code == 200
    events = [orjson.loads(e[6:]) for e in response.text.split("\n\n") if e]
    assert events[0]["choices"][0]["delta"]["content"] == "Hel"
    assert events[-1]["error"]["code"] == "internal_error"
    assert "presenting bug" not in response.text
    assert any(r.exc_info and "internal error" in r.getMessage() for r in caplog.records)
    assert gateway.upstream.responses[0].closed
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["error_code"]) == (500, "internal_error")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (300, 200)


async def test_a_dialect_crash_mid_stream_is_a_500_not_a_disconnect(
    gateway: MockGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.inbound.anthropic_response import AnthropicStreamWriter

    feed = AnthropicStreamWriter.feed
    calls: list[bytes] = []

    def broken(self: AnthropicStreamWriter, data: bytes) -> list[bytes]:
        calls.append(data)
        if len(calls) == 2:
            raise RuntimeError("presenting bug")
        return feed(self, data)

    monkeypatch.setattr(AnthropicStreamWriter, "feed", broken)
    rest = b"".join(sse(chunk("lo"), usage_chunk(300, 200)))
    gateway.routes["a"] = answer(MockReply(200, chunks=[*sse(chunk("Hel"), done=False), rest]))
    body = {"model": MODEL, "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    headers = {"x-api-key": gateway.key, "anthropic-version": "2023-06-01"}
    with pytest.raises(RuntimeError, match="presenting bug"):  # the ASGI server drops the stream
        await gateway.client.post("/v1/messages", json=body, headers=headers)
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["error_code"]) == (500, "internal_error")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (300, 200)  # read on for usage


async def test_a_crash_after_an_answer_without_usage_bills_the_local_prompt_count(
    gateway: MockGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sluice.relay.engine as engine

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("presenting bug")

    monkeypatch.setattr(engine, "json_response", broken)
    body = orjson.loads(completion("hello"))
    del body["usage"]  # llama.cpp-style: the upstream reports none
    gateway.routes["a"] = answer(MockReply(200, orjson.dumps(body)))
    response = await gateway.chat()
    assert_internal_error(response, caplog)
    (row,) = await gateway.usage_rows()
    assert (row["status"], row["error_code"], row["channel"]) == (500, "internal_error", "a")
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] == 0
    assert row["cost_micro"] == row["prompt_tokens"] * 1
