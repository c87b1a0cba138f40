"""The relay's POST routes are dispatched ahead of Starlette's router (relay/fast_path.py):
what a client sees must not depend on which way a request went."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import Gateway

BROWSER = "https://chat.example"


def _post(gateway: Gateway, path: str, body: Any, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        gateway.url + path,
        json=body,
        headers={"authorization": f"Bearer {key}", **headers},
        timeout=10,
    )


def test_browser_requests_still_get_cors_headers(gateway: Gateway) -> None:
    key = gateway.create_key("browser", budget_micro=10_000_000)
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    response = _post(gateway, "/v1/chat/completions", body, key, origin=BROWSER)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", BROWSER)
    assert "x-request-id" in response.headers["access-control-expose-headers"]
    plain = _post(gateway, "/v1/chat/completions", body, key)
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


_HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/chat/completions", {"messages": _HI}, 400),
        ("/v1/chat/completions", {"model": "no-such-model", "messages": _HI}, 404),
        ("/v1/embeddings", {"model": "text-embedding-3-small"}, 400),
        ("/chat/completions", [1, 2], 400),
    ],
)
def test_errors_are_the_same_either_way(
    gateway: Gateway, path: str, body: Any, status: int
) -> None:
    key = gateway.create_key("errors", budget_micro=10_000_000)
    fast = _post(gateway, path, body, key, **{"x-request-id": "fast-1"})
    routed = _post(gateway, path, body, key, origin=BROWSER, **{"x-request-id": "routed-1"})
    assert fast.status_code == routed.status_code == status
    assert fast.json() == routed.json()
    assert set(fast.json()["error"]) == {"message", "type", "param", "code"}
    assert fast.headers["x-request-id"] == "fast-1"
    assert routed.headers["x-request-id"] == "routed-1"
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"


def test_other_methods_on_relay_paths_fall_through_to_the_router(gateway: Gateway) -> None:
    key = gateway.create_key("methods")
    response = httpx.get(
        gateway.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_an_unexpected_error_in_a_fast_route_is_a_logged_500(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("sluice.relay.routes.relay", broken)
    key = gateway.create_key("broken")
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    response = _post(gateway, "/v1/chat/completions", body, key, **{"x-request-id": "boom-1"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and "secret internal detail" not in error["message"]
    assert response.headers["x-request-id"] == "boom-1"
    assert any("unhandled error" in r.getMessage() for r in caplog.records)
