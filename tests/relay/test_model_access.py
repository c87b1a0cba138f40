"""One answer to "may this key use this model, and is it served?" on every route: 403
``model_not_allowed`` for a model outside the key's allow-list, 404 ``model_not_found`` for a
model no channel serves; the Anthropic routes answer the same statuses in Anthropic's shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sluice.errors import NotFound, PermissionDenied
from sluice.keys import KeyRecord
from sluice.relay.model_access import check_model
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import Gateway

SERVED = "test-model"  # served by the fake channel (test-*), outside the restricted key's list
UNSERVED = "no-such-model"
HI = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    anthropic: bool = False

    def body(self, model: str) -> dict[str, Any] | None:
        if self.method == "GET":
            return None
        if self.anthropic:
            body: dict[str, Any] = {"model": model, "messages": HI}
            return body if self.path.endswith("count_tokens") else {**body, "max_tokens": 4}
        if self.name == "chat":
            return {"model": model, "messages": HI, "max_tokens": 4}
        if self.name == "completions":
            return {"model": model, "prompt": "hi", "max_tokens": 4}
        return {"model": model, "input": "hi"}


ROUTES = [
    Route("chat", "POST", "/v1/chat/completions"),
    Route("completions", "POST", "/v1/completions"),
    Route("embeddings", "POST", "/v1/embeddings"),
    Route("moderations", "POST", "/v1/moderations"),
    Route("messages", "POST", "/v1/messages", anthropic=True),
    Route("count_tokens", "POST", "/v1/messages/count_tokens", anthropic=True),
    Route("model", "GET", "/v1/models/{model}"),
]


def _call(gateway: Gateway, route: Route, key: str, model: str) -> httpx.Response:
    headers = {"x-api-key": key} if route.anthropic else {"Authorization": f"Bearer {key}"}
    url = gateway.url + route.path.format(model=model)
    return httpx.request(route.method, url, json=route.body(model), headers=headers, timeout=10)


def _assert_refused(response: httpx.Response, route: Route, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if route.anthropic:  # Anthropic's shape has no code: the status names the error type
        kind = {403: "permission_error", 404: "not_found_error"}[status]
        assert response.json()["type"] == "error" and error["type"] == kind
    else:
        assert error["code"] == code and error["param"] == "model"


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_disallowed_model_is_403_everywhere_but_the_model_lookup(
    gateway: Gateway, fake_openai: FakeOpenAI, route: Route
) -> None:
    key = gateway.create_key("narrow", allowed_models=["gpt-4o-mini"])
    response = _call(gateway, route, key, SERVED)
    if route.name == "model":
        # Documented difference: a lookup, like the listing, hides models the key may not use.
        _assert_refused(response, route, 404, "model_not_found")
    else:
        _assert_refused(response, route, 403, "model_not_allowed")
    assert fake_openai.received == []


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_unserved_model_is_404_everywhere(
    gateway: Gateway, fake_openai: FakeOpenAI, route: Route
) -> None:
    key = gateway.create_key("all")
    _assert_refused(_call(gateway, route, key, UNSERVED), route, 404, "model_not_found")
    assert fake_openai.received == []


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_allowed_served_model_passes_the_check(gateway: Gateway, route: Route) -> None:
    # The control: the same calls with a model the key may use are not refused for the model.
    key = gateway.create_key("all")
    model = {"embeddings": "text-embedding-3-small", "moderations": "omni-moderation-latest"}
    response = _call(gateway, route, key, model.get(route.name, SERVED))
    assert response.status_code == 200, response.text


# --- check_model itself (no server) -----------------------------------------------------------


def _key(models: list[str]) -> KeyRecord:
    return KeyRecord.build(
        id="k", name="k", key_hash="0" * 64, prefix="sk-x", budget_micro=None, spent_micro=0,
        expires_at=None, allowed_models=models, allowed_ips=[], rpm=None, tpm=None,
        max_concurrent=None, disabled=False, created_at=0.0, last_used_at=None,
    )  # fmt: skip


class _Router:
    def __init__(self, served: set[str]) -> None:
        self.served = served

    def has_model(self, model: str) -> bool:
        return model in self.served


def _check(models: list[str], served: set[str], model: str) -> None:
    router: Any = _Router(served)
    check_model(router, _key(models), model)  # only has_model is asked of the router


def test_allow_list_is_checked_before_the_router() -> None:
    # Not allowed and not served: 403, so a restricted key learns nothing about what is served.
    with pytest.raises(PermissionDenied) as refused:
        _check(["gpt-*"], set(), "claude-x")
    assert refused.value.code == "model_not_allowed" and refused.value.param == "model"
    with pytest.raises(NotFound) as missing:
        _check(["*"], {"gpt-4o"}, "claude-x")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    _check(["gpt-*"], {"gpt-4o"}, "gpt-4o")  # allowed and served: no error
