"""Table-driven hostile and malformed requests: clear OpenAI errors, no charge, still serving."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import Gateway

UPSTREAM_SECRET = "sk-upstream-SECRET-do-not-leak-123456"
GOOD_MESSAGES = [{"role": "user", "content": "hi"}]


@dataclass
class Case:
    name: str
    status: int
    body: Any = None  # dict -> JSON; bytes -> raw
    key: str = "good"  # good | none | malformed | unknown | disabled | expired | ip | models
    path: str = "/v1/chat/completions"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None


def chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "test-model", "messages": GOOD_MESSAGES}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def nested(depth: int) -> bytes:
    return b'{"model":"test-model","messages":' + b"[" * depth + b"]" * depth + b"}"


CASES = [
    Case("invalid json", 400, b'{"model": "test-model", "messages": [', code="invalid_json"),
    Case("empty body", 400, b"", code="invalid_json"),
    Case("json array body", 400, b"[1, 2, 3]", code="invalid_json"),
    Case("json string body", 400, b'"hello"', code="invalid_json"),
    Case("json null body", 400, b"null", code="invalid_json"),
    Case("trailing garbage", 400, b'{"model": "x"} trailing', code="invalid_json"),
    Case("non utf-8", 400, b'{"model": "test-model", "messages": "\xff\xfe"}', code="invalid_json"),
    Case("deeply nested", 400, nested(200), code="invalid_json"),
    Case("missing model", 400, chat(model=...), code="missing_required_parameter"),
    Case("model is a number", 400, chat(model=42), code="invalid_type"),
    Case("empty model", 400, chat(model=""), code="invalid_value"),
    Case("model with control chars", 400, chat(model="gpt\n4"), code="invalid_value"),
    Case("missing messages", 400, chat(messages=...), code="missing_required_parameter"),
    Case("messages not a list", 400, chat(messages="hi"), code="invalid_type"),
    Case("empty messages", 400, chat(messages=[]), code="empty_array"),
    Case("message not an object", 400, chat(messages=["hi"]), code="invalid_type"),
    Case("unknown role", 400, chat(messages=[{"role": "wizard", "content": "x"}])),
    Case("missing content", 400, chat(messages=[{"role": "user"}])),
    Case("content wrong type", 400, chat(messages=[{"role": "user", "content": 5}])),
    Case("bad content part", 400, chat(messages=[{"role": "user", "content": [1]}])),
    Case("tool message without id", 400, chat(messages=[{"role": "tool", "content": "x"}])),
    Case("negative max_tokens", 400, chat(max_tokens=-1), code="invalid_value"),
    Case("zero max_tokens", 400, chat(max_tokens=0), code="invalid_value"),
    Case("absurd max_tokens", 400, chat(max_tokens=10**12), code="invalid_value"),
    Case("max_tokens string", 400, chat(max_tokens="100"), code="invalid_type"),
    Case("max_tokens float", 400, chat(max_tokens=1.5), code="invalid_type"),
    Case("temperature too high", 400, chat(temperature=7), code="invalid_value"),
    Case("temperature string", 400, chat(temperature="hot"), code="invalid_type"),
    Case("top_p negative", 400, chat(top_p=-0.1), code="invalid_value"),
    Case("n zero", 400, chat(n=0), code="invalid_value"),
    Case("n absurd", 400, chat(n=100000), code="invalid_value"),
    Case("stream not bool", 400, chat(stream="yes"), code="invalid_type"),
    Case("stream_options without stream", 400, chat(stream_options={"include_usage": True})),
    Case("tools not a list", 400, chat(tools={"a": 1}), code="invalid_type"),
    Case("stop wrong type", 400, chat(stop=5), code="invalid_type"),
    Case("unknown model", 404, chat(model="no-such-model"), code="model_not_found"),
    Case("oversized body", 413, b'{"model":"test-model","pad":"' + b"x" * 300_000 + b'"}'),
    Case("wrong content type", 415, b"model=test-model", headers={"content-type": "text/plain"}),
    Case(
        "form content type",
        415,
        b"a=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Case("no key", 401, chat(), key="none", code="missing_api_key"),
    Case("malformed auth header", 401, chat(), key="malformed"),
    Case("unknown key", 401, chat(), key="unknown", code="invalid_api_key"),
    Case("disabled key", 401, chat(), key="disabled", code="key_disabled"),
    Case("expired key", 401, chat(), key="expired", code="key_expired"),
    Case("ip not allowed", 403, chat(), key="ip", code="ip_not_allowed"),
    Case("model not allowed", 403, chat(), key="models", code="model_not_allowed"),
    Case("unknown route", 404, chat(), path="/v1/does-not-exist", code="unknown_route"),
    Case("wrong method", 405, None, path="/v1/chat/completions", method="GET"),
    Case(
        "embeddings missing input", 400, {"model": "text-embedding-3-small"}, path="/v1/embeddings"
    ),
    Case(
        "embeddings empty list",
        400,
        {"model": "text-embedding-3-small", "input": []},
        path="/v1/embeddings",
        code="empty_array",
    ),  # fmt: skip
    Case(
        "embeddings bad format",
        400,
        {"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"},
        path="/v1/embeddings",
    ),  # fmt: skip
    Case("completions missing prompt", 400, {"model": "test-instruct"}, path="/v1/completions"),
    Case(
        "billing bad date",
        400,
        None,
        path="/v1/dashboard/billing/usage?start_date=yesterday",
        method="GET",
        code="invalid_date",
    ),  # fmt: skip
]


@pytest.fixture
def hostile_gateway(gateway_factory: GatewayFactory, fake_openai: FakeOpenAI) -> Gateway:
    from tests.conftest import openai_channel

    return gateway_factory(
        [openai_channel(fake_openai, models=["test-*", "text-embedding-3-small"])],
        limits={"max_body_bytes": 200_000},
    )


def _keys(gateway: Gateway) -> dict[str, str | None]:
    from sluice.storage.key_store import KeyChanges

    disabled = gateway.create_key("disabled")
    gateway.call(
        gateway.state.keys.update(gateway.key_record(disabled).id, KeyChanges(disabled=True))
    )
    return {
        "good": gateway.create_key("good", budget_micro=1_000_000),
        "none": None,
        "unknown": "sk-" + "x" * 48,
        "disabled": disabled,
        "expired": gateway.create_key("expired", expires_at=time.time() - 10),
        "ip": gateway.create_key("ip", allowed_ips=["10.1.2.0/24"]),
        "models": gateway.create_key("models", allowed_models=["gpt-4o*"]),
    }


def test_hostile_requests(
    hostile_gateway: Gateway, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(CASES) >= 40
    gateway = hostile_gateway
    keys = _keys(gateway)
    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for case in CASES:
            headers = {"content-type": "application/json", **case.headers}
            if case.key == "malformed":
                headers["authorization"] = "Token abc"
            elif keys.get(case.key):
                headers["authorization"] = f"Bearer {keys[case.key]}"
            content = case.body if isinstance(case.body, bytes) else (
                orjson.dumps(case.body) if case.body is not None else None
            )  # fmt: skip
            response = client.request(case.method, case.path, content=content, headers=headers)
            assert response.status_code == case.status, (case.name, response.text)
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, case.name
            assert isinstance(error["message"], str) and error["message"], case.name
            if case.code is not None:
                assert error["code"] == case.code, (case.name, error)
            assert UPSTREAM_SECRET not in response.text
        # Still serving, and nothing above reached the upstream or cost anything.
        ok = client.post(
            "/v1/chat/completions",
            json=chat(),
            headers={"authorization": f"Bearer {keys['good']}"},
        )
        assert ok.status_code == 200
    assert len(fake_openai.received) == 1
    rows = gateway.usage_rows()
    assert len(rows) == 1 and rows[0]["status"] == 200
    good = keys["good"]
    assert good is not None
    record = gateway.key_record(good)
    assert record.spent_micro == rows[0]["cost_micro"]
    assert all(UPSTREAM_SECRET not in r.getMessage() for r in caplog.records)


def test_client_vanishing_mid_body_is_not_a_server_error(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    key = gateway.create_key("vanish")
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: 5000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(head.encode() + b'{"model": "test-model", ')
    ok = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json=chat(),
        headers={"authorization": f"Bearer {key}"},
    )
    assert ok.status_code == 200
    gateway.flush()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(gateway.usage_rows(key)) == 1, "the vanished request was never admitted"
