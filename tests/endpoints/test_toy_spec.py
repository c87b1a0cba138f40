"""An endpoint family is one spec: a toy registered in a few lines (multipart in, binary out,
priced per call) is authenticated, routed with failover, streamed both ways, metered and billed
by the relay without a line of the relay knowing it exists."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import BodyPartReader, web

from sluice.core import MeteredUnits
from sluice.endpoints import EndpointSpec, default_specs
from sluice.endpoints.spec import Estimate, EstimateInput, MeterInput
from sluice.errors import InvalidRequest
from sluice.protocol.validate import RequestView, model_field, simple_view
from tests.conftest import GatewayFactory
from tests.fakes.server import serve_on_loopback
from tests.support import Gateway, LoopThread

PRICE_USD = 0.04  # per call
AUDIO = b"RIFF" + bytes(range(256)) * 64  # what the fake "renders", sent in several writes


# --- the toy spec: everything the relay needs to know about the endpoint ----------------------


def _validate(body: dict[str, Any]) -> RequestView:
    if not isinstance(body.get("file"), dict):
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    return simple_view("toy", model_field(body))


def _one_call(_: EstimateInput | MeterInput) -> Any:
    return MeteredUnits(calls=1)


TOY = EndpointSpec(
    name="toy",
    paths=("/v1/toy/render",),
    upstream_path="/toy/render",
    validate=_validate,
    estimate=lambda given: Estimate(units=_one_call(given)),
    units=_one_call,
    body="multipart",
    response="binary",
)


# --- a fake upstream that parses the form with aiohttp's own multipart reader -----------------


@dataclass
class ToyUpstream:
    fail_with: int | None = None  # answer this status instead of rendering
    seen: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> ToyUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/toy/render", self._render)
        self.runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _render(self, request: web.Request) -> web.StreamResponse:
        fields: dict[str, Any] = {"content_length": request.content_length,
                                  "chunked": request.headers.get("transfer-encoding")}  # fmt: skip
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            data = await part.read()
            if part.filename is not None:
                fields[part.name or ""] = (part.filename, hashlib.sha256(data).hexdigest())
            else:
                fields[part.name or ""] = data.decode()
        self.seen.append(fields)
        if self.fail_with is not None:
            return web.json_response({"error": {"message": "busy"}}, status=self.fail_with)
        response = web.StreamResponse(headers={"content-type": "audio/wav"})
        await response.prepare(request)
        for at in range(0, len(AUDIO), 4096):
            await response.write(AUDIO[at : at + 4096])
            await asyncio.sleep(0)
        await response.write_eof()
        return response


@pytest.fixture
def upstreams(loop_thread: LoopThread) -> Iterator[list[ToyUpstream]]:
    started = [loop_thread.run(ToyUpstream().start()) for _ in range(2)]
    yield started
    for upstream in started:
        loop_thread.run(upstream.stop())


def _channel(name: str, upstream: ToyUpstream, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai-compatible", "base_url": upstream.base_url,
            "api_key": "sk-toy-upstream-secret", "models": ["toy-*"],
            "model_map": {"toy-model": "upstream-toy"}, **extra}  # fmt: skip


def _gateway(factory: GatewayFactory, channels: list[dict[str, Any]], **extra: Any) -> Gateway:
    return factory(
        channels,
        endpoint_specs=[*default_specs(), TOY],
        pricing={"overrides": {"*toy*": {"per_call": PRICE_USD}}},
        **extra,
    )


FILE = b"\x00\x01 toy input \xff" * 50_000  # ~0.75 MB: spooled to disk, not held in memory


def _render(gateway: Gateway, key: str, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/toy/render",
        data={"model": "toy-model", **fields},
        files={"file": ("input.bin", FILE, "application/octet-stream")},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_toy_spec_end_to_end_multipart_in_binary_out_billed_per_call(
    gateway_factory: GatewayFactory, upstreams: list[ToyUpstream]
) -> None:
    gateway = _gateway(gateway_factory, [_channel("toy", upstreams[0])])
    key = gateway.create_key("toy", budget_micro=1_000_000)
    response = _render(gateway, key, prompt="make it loud")
    assert response.status_code == 200, response.text
    assert response.content == AUDIO
    assert response.headers["content-type"] == "audio/wav"
    [seen] = upstreams[0].seen
    # The form arrives whole, with the upstream's model name, at an exact length (streamed
    # from the spool with Content-Length, not chunked).
    assert seen["model"] == "upstream-toy" and seen["prompt"] == "make it loud"
    assert seen["file"] == ("input.bin", hashlib.sha256(FILE).hexdigest())
    assert seen["content_length"] is not None and seen["chunked"] is None
    gateway.flush()
    [row] = gateway.usage_rows(key)
    assert (row["endpoint"], row["status"], row["calls"]) == ("toy", 200, 1)
    assert row["cost_micro"] == round(PRICE_USD * 1_000_000)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (0, 0)
    assert gateway.key_record(key).spent_micro == row["cost_micro"]


def test_a_failed_channel_is_failed_over_with_the_same_upload(
    gateway_factory: GatewayFactory, upstreams: list[ToyUpstream]
) -> None:
    first, second = upstreams
    first.fail_with = 503
    gateway = _gateway(
        gateway_factory, [_channel("busy", first, priority=1), _channel("spare", second)]
    )
    key = gateway.create_key("toy", budget_micro=1_000_000)
    response = _render(gateway, key)
    assert response.status_code == 200 and response.content == AUDIO
    digest = hashlib.sha256(FILE).hexdigest()
    assert [s["file"][1] for s in (*first.seen, *second.seen)] == [digest, digest]
    gateway.flush()
    [row] = gateway.usage_rows(key)
    assert (row["channel"], row["calls"]) == ("spare", 1)


def test_budget_reserves_the_call_before_the_upstream_is_asked(
    gateway_factory: GatewayFactory, upstreams: list[ToyUpstream]
) -> None:
    gateway = _gateway(gateway_factory, [_channel("toy", upstreams[0])])
    key = gateway.create_key("toy", budget_micro=round(PRICE_USD * 1_000_000) - 1)
    response = _render(gateway, key)
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert upstreams[0].seen == []


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [("json body", 415, "unsupported_media_type"), ("no file", 400, None),
     ("too large", 413, None), ("broken form", 400, "invalid_multipart")],
)  # fmt: skip
def test_bad_uploads_get_clear_errors_and_reach_no_upstream(
    gateway_factory: GatewayFactory,
    upstreams: list[ToyUpstream],
    case: str,
    status: int,
    code: str | None,
) -> None:
    gateway = _gateway(
        gateway_factory, [_channel("toy", upstreams[0])], limits={"max_multipart_bytes": 100_000}
    )
    key = gateway.create_key("toy", budget_micro=1_000_000)
    url, auth = f"{gateway.base_url}/toy/render", {"authorization": f"Bearer {key}"}
    if case == "json body":
        response = httpx.post(url, json={"model": "toy-model"}, headers=auth)
    elif case == "no file":
        response = httpx.post(url, data={"model": "toy-model"}, files={"x": ("a", b"1")},
                              headers=auth)  # fmt: skip
    elif case == "too large":
        response = _render(gateway, key)
    else:
        broken = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\ntoy'
        headers = {**auth, "content-type": "multipart/form-data; boundary=b"}
        response = httpx.post(url, content=broken + b"\r\n--b\r\nGarbage\r\n", headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    assert upstreams[0].seen == []
    gateway.flush()
    assert all(row["cost_micro"] == 0 for row in gateway.usage_rows(key))


def test_a_channel_narrowed_to_other_endpoints_never_gets_the_toy(
    gateway_factory: GatewayFactory, upstreams: list[ToyUpstream]
) -> None:
    gateway = _gateway(gateway_factory, [_channel("chat-only", upstreams[0], endpoints=["chat"])])
    key = gateway.create_key("toy", budget_micro=1_000_000)
    response = _render(gateway, key)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "unsupported_endpoint"
    assert upstreams[0].seen == []
