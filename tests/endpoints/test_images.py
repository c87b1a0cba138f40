"""The images endpoints end to end: the official SDK against the gateway against a fake images
API that parses uploads with aiohttp's own reader; answers checked against OpenAI's spec, usage
rows against the shipped prices."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.images_upstream import IMAGE_TOKENS_PER_INPUT, OUTPUT_TOKENS, PNG, FakeImages
from tests.openapi_schema import validate_openai
from tests.support import Gateway, LoopThread

SdkFactory = Callable[..., openai.OpenAI]
UPSTREAM_KEY = "sk-images-upstream-SECRET-0123456789"
# Shipped prices (src/sluice/metering/data/prices.yaml), in micro-dollars.
DALLE2 = {"256x256": 16_000, "512x512": 18_000, "1024x1024": 20_000}
DALLE3_STANDARD, DALLE3_HD_WIDE = 40_000, 120_000
GPT_IMAGE_LOW_SQUARE = 11_000
# gpt-image-1 per token, in micro-dollars: text input $5, image input $10, output $40 per 1M.
TEXT_IN, IMAGE_IN, OUT = 5, 10, 40


def _channel(name: str, fake: FakeImages, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai-compatible", "base_url": fake.base_url,
            "api_key": UPSTREAM_KEY, "models": ["dall-e-*", "gpt-image-*", "house-*"],
            **extra}  # fmt: skip


def _start(loop_thread: LoopThread, **options: Any) -> FakeImages:
    return loop_thread.run(FakeImages(**options).start())


@pytest.fixture
def fake(loop_thread: LoopThread) -> Iterator[FakeImages]:
    started = _start(loop_thread)
    yield started
    loop_thread.run(started.stop())


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, fake: FakeImages) -> Gateway:
    return gateway_factory([_channel("images", fake)])


def _words(prompt: str) -> int:
    return len(prompt.split())  # what the fake reports as text tokens


def _one_row(gateway: Gateway, key: str) -> dict[str, Any]:
    gateway.flush()
    [row] = gateway.usage_rows(key)
    return row


# --- generations ----------------------------------------------------------------------------------


def test_dall_e_3_url_is_billed_per_image_at_its_size_and_quality(
    gateway: Gateway, fake: FakeImages, sdk: SdkFactory
) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    client = sdk(gateway, key)
    raw = client.images.with_raw_response.generate(
        model="dall-e-3", prompt="a lighthouse at dusk", size="1792x1024", quality="hd",
        style="natural",
    )  # fmt: skip
    validate_openai("ImagesResponse", raw.http_response.json())
    result = raw.parse()
    assert result.data is not None and result.data[0].url is not None
    assert result.data[0].revised_prompt == "A revised a lighthouse at dusk"
    [call] = fake.calls
    assert call.fields == {"model": "dall-e-3", "prompt": "a lighthouse at dusk",
                           "size": "1792x1024", "quality": "hd", "style": "natural"}  # fmt: skip
    assert call.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    row = _one_row(gateway, key)
    assert (row["endpoint"], row["status"], row["images"]) == ("images", 200, 1)
    assert row["cost_micro"] == DALLE3_HD_WIDE
    assert (row["prompt_tokens"], row["completion_tokens"]) == (0, 0)
    assert gateway.key_record(key).spent_micro == DALLE3_HD_WIDE


def test_dall_e_2_b64_json_and_the_default_model(
    gateway: Gateway, fake: FakeImages, sdk: SdkFactory
) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    client = sdk(gateway, key)
    raw = client.images.with_raw_response.generate(
        prompt="a teapot", n=2, size="512x512", response_format="b64_json"
    )
    validate_openai("ImagesResponse", raw.http_response.json())
    data = raw.parse().data
    assert data is not None and [base64.b64decode(d.b64_json or "") for d in data] == [PNG] * 2
    # No model named: OpenAI's default, filled in so it is routed and priced.
    assert fake.calls[0].fields["model"] == "dall-e-2"
    row = _one_row(gateway, key)
    assert (row["model"], row["images"], row["cost_micro"]) == (
        "dall-e-2",
        2,
        2 * DALLE2["512x512"],
    )


def test_gpt_image_is_billed_by_the_tokens_it_reports(
    gateway: Gateway, fake: FakeImages, sdk: SdkFactory
) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    client = sdk(gateway, key)
    prompt = "a red fox in fresh snow"
    raw = client.images.with_raw_response.generate(
        model="gpt-image-1", prompt=prompt, size="1024x1536", quality="high", n=2,
        background="opaque", output_format="png", moderation="low", output_compression=100,
    )  # fmt: skip
    body = raw.http_response.json()
    validate_openai("ImagesResponse", body)
    assert body["usage"]["output_tokens"] == 2 * OUTPUT_TOKENS["high"]["1024x1536"]
    assert "response_format" not in fake.calls[0].fields
    row = _one_row(gateway, key)
    output = 2 * OUTPUT_TOKENS["high"]["1024x1536"]
    # Tokens win over the per-image table (2 x $0.25 would be 500_000); the images are counted.
    assert row["images"] == 2
    assert (row["prompt_tokens"], row["completion_tokens"]) == (_words(prompt), output)
    assert row["cost_micro"] == _words(prompt) * TEXT_IN + output * OUT


def test_an_openai_channel_forwards_images_as_is(
    gateway_factory: GatewayFactory, fake: FakeImages, sdk: SdkFactory
) -> None:
    gateway = gateway_factory([{**_channel("openai", fake), "type": "openai"}])
    key = gateway.create_key("img", budget_micro=10_000_000)
    sdk(gateway, key).images.generate(model="dall-e-3", prompt="a bell", user="u-1")
    [call] = fake.calls
    assert call.path == "/v1/images/generations"
    assert call.fields == {"model": "dall-e-3", "prompt": "a bell", "user": "u-1"}
    assert _one_row(gateway, key)["cost_micro"] == DALLE3_STANDARD


def test_gpt_image_from_an_upstream_without_usage_is_billed_per_image(
    gateway_factory: GatewayFactory, loop_thread: LoopThread, sdk: SdkFactory
) -> None:
    quiet = _start(loop_thread, report_usage=False)
    try:
        gateway = gateway_factory([_channel("quiet", quiet)])
        key = gateway.create_key("img", budget_micro=10_000_000)
        result = sdk(gateway, key).images.generate(
            model="gpt-image-1", prompt="a kite", size="1024x1024", quality="low", n=3
        )
        assert result.data is not None and len(result.data) == 3
        row = _one_row(gateway, key)
        assert (row["images"], row["cost_micro"]) == (3, 3 * GPT_IMAGE_LOW_SQUARE)
    finally:
        loop_thread.run(quiet.stop())


# --- edits and variations (multipart) ----------------------------------------------------------

FIRST = PNG + b"\x00first" * 40_000  # ~240 KB each: spooled, streamed, hashed by the fake
SECOND = PNG + b"\x00second" * 30_000
THIRD = PNG + b"\x00third" * 20_000
MASK = PNG + b"\x00mask" * 10_000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_edit_with_one_image(gateway: Gateway, fake: FakeImages, sdk: SdkFactory) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    client = sdk(gateway, key)
    raw = client.images.with_raw_response.edit(
        model="dall-e-2", image=("otter.png", FIRST, "image/png"), prompt="add a beret",
        size="256x256", n=2,
    )  # fmt: skip
    validate_openai("ImagesResponse", raw.http_response.json())
    [call] = fake.calls
    assert call.fields == {"model": "dall-e-2", "prompt": "add a beret", "size": "256x256",
                           "n": "2"}  # fmt: skip
    assert [(u.name, u.filename, u.content_type, u.sha256) for u in call.uploads] == [
        ("image", "otter.png", "image/png", _sha(FIRST))
    ]
    assert call.content_length is not None  # streamed from the spool at an exact length
    row = _one_row(gateway, key)
    assert (row["endpoint"], row["images"], row["cost_micro"]) == (
        "image_edits", 2, 2 * DALLE2["256x256"]
    )  # fmt: skip


def test_edit_with_several_images_and_a_mask_bills_image_input_tokens(
    gateway: Gateway, fake: FakeImages, sdk: SdkFactory
) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    client = sdk(gateway, key)
    prompt = "put these three in one gift basket"
    raw = client.images.with_raw_response.edit(
        model="gpt-image-1",
        image=[("a.png", FIRST, "image/png"), ("b.png", SECOND, "image/png"),
               ("c.webp", THIRD, "image/webp")],
        mask=("mask.png", MASK, "image/png"), prompt=prompt, quality="low", size="1024x1024",
        input_fidelity="high",
    )  # fmt: skip
    validate_openai("ImagesResponse", raw.http_response.json())
    [call] = fake.calls
    assert [(u.name, u.filename, u.sha256) for u in call.uploads] == [
        ("image[]", "a.png", _sha(FIRST)), ("image[]", "b.png", _sha(SECOND)),
        ("image[]", "c.webp", _sha(THIRD)), ("mask", "mask.png", _sha(MASK)),
    ]  # fmt: skip
    assert call.fields["model"] == "gpt-image-1" and call.fields["input_fidelity"] == "high"
    row = _one_row(gateway, key)
    image_tokens = 4 * IMAGE_TOKENS_PER_INPUT
    output = OUTPUT_TOKENS["low"]["1024x1024"]
    assert row["prompt_tokens"] == _words(prompt) + image_tokens
    # The image part of the input at the image rate ($10/1M), the text at $5/1M.
    assert row["cost_micro"] == _words(prompt) * TEXT_IN + image_tokens * IMAGE_IN + output * OUT
    assert row["images"] == 1


def test_variation(gateway: Gateway, fake: FakeImages, sdk: SdkFactory) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    client = sdk(gateway, key)
    with pytest.warns(DeprecationWarning):  # deprecated in the SDK, still served by OpenAI
        raw = client.images.with_raw_response.create_variation(
            image=("cat.png", FIRST, "image/png"), n=3, size="1024x1024", response_format="url"
        )
    validate_openai("ImagesResponse", raw.http_response.json())
    [call] = fake.calls
    # No model sent: the form gets the default added, as OpenAI would assume it.
    assert call.fields == {"n": "3", "size": "1024x1024", "response_format": "url",
                           "model": "dall-e-2"}  # fmt: skip
    assert [u.sha256 for u in call.uploads] == [_sha(FIRST)]
    row = _one_row(gateway, key)
    assert (row["endpoint"], row["images"], row["cost_micro"]) == (
        "image_variations", 3, 3 * DALLE2["1024x1024"]
    )  # fmt: skip


def test_failover_resends_the_upload(
    gateway_factory: GatewayFactory, loop_thread: LoopThread, sdk: SdkFactory
) -> None:
    busy, spare = _start(loop_thread), _start(loop_thread)
    try:
        busy.fail_with = 503
        gateway = gateway_factory([_channel("busy", busy, priority=1), _channel("spare", spare)])
        key = gateway.create_key("img", budget_micro=10_000_000)
        sdk(gateway, key).images.edit(
            model="gpt-image-1", image=[("a.png", FIRST, "image/png"),
                                        ("b.png", SECOND, "image/png")],
            prompt="merge", quality="low", size="1024x1024",
        )  # fmt: skip
        sent = [[u.sha256 for u in c.uploads] for c in (*busy.calls, *spare.calls)]
        assert sent == [[_sha(FIRST), _sha(SECOND)]] * 2
        assert busy.calls[0].fields == spare.calls[0].fields
        assert _one_row(gateway, key)["channel"] == "spare"
    finally:
        for started in (busy, spare):
            loop_thread.run(started.stop())


# --- streaming partial images ---------------------------------------------------------------------


def test_streamed_generation_relays_partial_images_and_bills_the_usage(
    gateway: Gateway, fake: FakeImages, sdk: SdkFactory
) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    client = sdk(gateway, key)
    prompt = "a paper boat"
    stream = client.images.generate(
        model="gpt-image-1", prompt=prompt, stream=True, partial_images=2, quality="medium",
        size="1536x1024",
    )  # fmt: skip
    events = [event.to_dict() for event in stream]
    assert [e["type"] for e in events] == [
        "image_generation.partial_image", "image_generation.partial_image",
        "image_generation.completed",
    ]  # fmt: skip
    for event in events[:-1]:
        validate_openai("ImageGenPartialImageEvent", event)
    validate_openai("ImageGenCompletedEvent", events[-1])
    assert base64.b64decode(str(events[-1]["b64_json"])) == PNG
    assert "stream_options" not in fake.calls[0].fields  # images refuse it
    row = _one_row(gateway, key)
    output = OUTPUT_TOKENS["medium"]["1536x1024"]
    assert (row["stream"], row["status"], row["images"]) == (True, 200, 1)
    assert row["cost_micro"] == _words(prompt) * TEXT_IN + output * OUT


def test_streamed_edit_keeps_the_event_names(
    gateway: Gateway, fake: FakeImages, sdk: SdkFactory
) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    with httpx.stream(
        "POST", f"{gateway.base_url}/images/edits",
        data={"model": "gpt-image-1", "prompt": "a hat", "stream": "true", "partial_images": "1",
              "quality": "low"},
        files={"image": ("a.png", FIRST, "image/png")},
        headers={"authorization": f"Bearer {key}"}, timeout=30,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    names = [line for line in text.splitlines() if line.startswith("event:")]
    assert names == ["event: image_edit.partial_image", "event: image_edit.completed"]
    sdk_events = list(
        sdk(gateway, key).images.edit(
            model="gpt-image-1", image=("a.png", FIRST, "image/png"), prompt="a hat", stream=True
        )
    )
    validate_openai("ImageEditCompletedEvent", sdk_events[-1].to_dict())
    gateway.flush()
    rows = gateway.usage_rows(key)
    assert [r["endpoint"] for r in rows] == ["image_edits", "image_edits"]
    assert all(r["cost_micro"] > 0 and r["images"] == 1 for r in rows)


def test_a_client_leaving_mid_stream_pays_the_usage_the_upstream_reports(
    gateway: Gateway, fake: FakeImages
) -> None:
    fake.event_delay_s = 0.3
    key = gateway.create_key("img", budget_micro=10_000_000)
    body = {"model": "gpt-image-1", "prompt": "a slow boat", "stream": True,
            "partial_images": 3, "quality": "high", "size": "1024x1024"}  # fmt: skip
    auth = {"authorization": f"Bearer {key}"}
    url = f"{gateway.base_url}/images/generations"
    with httpx.stream("POST", url, json=body, headers=auth, timeout=30) as response:
        first = next(response.iter_raw())
        assert first.startswith(b"event: image_generation.partial_image")
    for _ in range(100):  # the gateway reads the upstream on for its usage, then settles
        rows = gateway.usage_rows(key)
        if rows:
            break
        gateway.call(asyncio.sleep(0.05))
    [row] = rows
    output = OUTPUT_TOKENS["high"]["1024x1024"]
    assert (row["status"], row["images"]) == (499, 1)
    assert row["cost_micro"] == _words("a slow boat") * TEXT_IN + output * OUT


def test_a_stream_cut_before_its_completed_event_is_an_error_event(
    gateway: Gateway, fake: FakeImages, sdk: SdkFactory
) -> None:
    fake.truncate_stream = True
    key = gateway.create_key("img", budget_micro=10_000_000)
    stream = sdk(gateway, key).images.generate(
        model="gpt-image-1", prompt="a boat", stream=True, partial_images=1
    )
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "ended before it was complete" in caught.value.message
    row = _one_row(gateway, key)
    assert (row["status"], row["error_code"]) == (502, "upstream_stream_truncated")
    assert row["images"] == 0


# --- refusals -------------------------------------------------------------------------------------


def _post_json(gateway: Gateway, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}{path}", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip


def _post_form(
    gateway: Gateway, key: str, path: str, data: dict[str, str], files: dict[str, Any]
) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}{path}", data=data, files=files,
                      headers={"authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip


IMAGE_FILE = {"image": ("a.png", PNG, "image/png")}


@pytest.mark.parametrize(
    ("path", "body", "files", "status", "param"),
    [
        ("/images/generations", {"model": "dall-e-2", "prompt": "x", "n": 11}, None, 400, "n"),
        ("/images/generations", {"model": "dall-e-3", "prompt": "x", "n": 2}, None, 400, "n"),
        ("/images/generations", {"model": "dall-e-2", "prompt": "x", "size": "1792x1024"},
         None, 400, "size"),
        ("/images/generations", {"model": "gpt-image-1", "prompt": "x", "size": "256x256"},
         None, 400, "size"),
        ("/images/generations", {"model": "dall-e-3"}, None, 400, "prompt"),
        ("/images/generations", {"model": "gpt-image-1", "prompt": "x",
                                 "response_format": "url"}, None, 400, "response_format"),
        ("/images/generations", {"model": "dall-e-3", "prompt": "x", "quality": "high"},
         None, 400, "quality"),
        ("/images/generations", {"model": "dall-e-2", "prompt": "x", "stream": True},
         None, 400, "stream"),
        ("/images/generations", {"model": "gpt-image-1", "prompt": "x", "partial_images": 9},
         None, 400, "partial_images"),
        ("/images/edits", {"model": "gpt-image-1", "prompt": "x"}, {"mask": ("m.png", PNG)},
         400, "image"),
        ("/images/edits", {"model": "gpt-image-1", "prompt": "x", "image": "not a file"},
         {"mask": ("m.png", PNG)}, 400, "image"),
        ("/images/edits", {"model": "gpt-image-1"}, IMAGE_FILE, 400, "prompt"),
        ("/images/edits", {"model": "dall-e-2", "prompt": "x", "n": "eleven"}, IMAGE_FILE,
         400, "n"),
        ("/images/edits", {"model": "dall-e-3", "prompt": "x"}, IMAGE_FILE, 400, "model"),
        ("/images/variations", {"model": "gpt-image-1"}, IMAGE_FILE, 400, "model"),
        ("/images/variations", {"model": "dall-e-2", "size": "1536x1024"}, IMAGE_FILE,
         400, "size"),
        ("/images/generations", {"model": "dall-e-2", "prompt": "x"}, IMAGE_FILE, 415, None),
        ("/images/edits", {"model": "gpt-image-1", "prompt": "x"}, None, 415, None),
        ("/images/variations", {"model": "dall-e-2"}, None, 415, None),
    ],
)  # fmt: skip
def test_bad_requests_are_openai_shaped_and_reach_no_upstream(
    gateway: Gateway,
    fake: FakeImages,
    path: str,
    body: dict[str, Any],
    files: dict[str, Any] | None,
    status: int,
    param: str | None,
) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    if files is None:
        response = _post_json(gateway, key, path, body)
    else:
        response = _post_form(gateway, key, path, body, files)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if status == 415:
        assert error["code"] == "unsupported_media_type"
    assert fake.calls == []


def test_sdk_sees_a_bad_request_error(gateway: Gateway, fake: FakeImages, sdk: SdkFactory) -> None:
    client = sdk(gateway, gateway.create_key("img", budget_micro=10_000_000))
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="dall-e-3", prompt="x", n=3)
    assert caught.value.param == "n"
    assert fake.calls == []


def test_the_upload_limit_is_the_multipart_setting(
    gateway_factory: GatewayFactory, fake: FakeImages
) -> None:
    gateway = gateway_factory([_channel("images", fake)], limits={"max_multipart_bytes": 200_000})
    key = gateway.create_key("img", budget_micro=10_000_000)
    response = _post_form(gateway, key, "/images/edits", {"model": "gpt-image-1", "prompt": "x"},
                          {"image": ("big.png", FIRST, "image/png")})  # fmt: skip
    assert response.status_code == 413, response.text
    small = _post_form(gateway, key, "/images/edits", {"model": "gpt-image-1", "prompt": "x"},
                       {"image": ("small.png", PNG, "image/png")})  # fmt: skip
    assert small.status_code == 200, small.text
    assert len(fake.calls) == 1


# --- channels that serve images, and those that do not ---------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "gemini", "local"])
def test_channels_without_images_refuse_with_400(
    gateway_factory: GatewayFactory, fake: FakeImages, kind: str
) -> None:
    channel: dict[str, Any] = {"name": kind, "type": kind, "models": ["gpt-image-1"]}
    local_endpoints = None
    if kind == "local":
        channel["stream_usage"] = False
        local_endpoints = {"local": fake.base_url}
    else:
        channel.update(base_url=fake.base_url, api_key="sk-not-used-0123456789")
    gateway = gateway_factory([channel], local_endpoints=local_endpoints)
    key = gateway.create_key("img", budget_micro=10_000_000)
    for path, body, files in [
        ("/images/generations", {"model": "gpt-image-1", "prompt": "x"}, None),
        ("/images/edits", {"model": "gpt-image-1", "prompt": "x"}, IMAGE_FILE),
    ]:
        if files is None:
            response = _post_json(gateway, key, path, body)
        else:
            response = _post_form(gateway, key, path, body, files)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "unsupported_endpoint"
    assert fake.calls == []


def test_azure_serves_images_at_deployment_urls_but_no_variations(
    gateway_factory: GatewayFactory, loop_thread: LoopThread, sdk: SdkFactory
) -> None:
    azure = _start(loop_thread, azure=True)
    try:
        gateway = gateway_factory([{
            "name": "azure", "type": "azure", "base_url": azure.base_url,
            "api_key": azure.azure_key, "api_version": "2025-04-01-preview",
            "models": ["gpt-image-1", "dall-e-2"],
            "model_map": {"gpt-image-1": "gpt-image-deployment"},
        }])  # fmt: skip
        key = gateway.create_key("img", budget_micro=10_000_000)
        client = sdk(gateway, key)
        client.images.generate(model="gpt-image-1", prompt="a map", quality="low")
        events = list(
            client.images.generate(model="gpt-image-1", prompt="a map", stream=True,
                                   partial_images=1)
        )  # fmt: skip
        assert [e.type for e in events] == [
            "image_generation.partial_image", "image_generation.completed"
        ]  # fmt: skip
        client.images.edit(
            model="gpt-image-1", image=("a.png", FIRST, "image/png"), prompt="a map", quality="low"
        )
        assert [c.path for c in azure.calls] == [
            "/openai/deployments/gpt-image-deployment/images/generations",
            "/openai/deployments/gpt-image-deployment/images/generations",
            "/openai/deployments/gpt-image-deployment/images/edits",
        ]
        assert "stream_options" not in azure.calls[1].fields
        assert all("Authorization" not in c.headers for c in azure.calls)
        with pytest.raises(openai.BadRequestError) as caught, pytest.warns(DeprecationWarning):
            client.images.create_variation(model="dall-e-2", image=("a.png", PNG, "image/png"))
        assert caught.value.code == "unsupported_endpoint"
    finally:
        loop_thread.run(azure.stop())


# --- budgets and billing --------------------------------------------------------------------------


async def test_fifty_concurrent_generations_cannot_overspend_by_more_than_one_image(
    gateway: Gateway, fake: FakeImages
) -> None:
    price = DALLE2["1024x1024"]
    budget = 10 * price + price // 2  # ten and a half images
    key = gateway.create_key("race", budget_micro=budget)
    body = {"model": "dall-e-2", "prompt": "a tile", "size": "1024x1024"}
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:

        async def one() -> int:
            response = await client.post("/images/generations", json=body,
                                         headers={"authorization": f"Bearer {key}"})  # fmt: skip
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "insufficient_quota"
            return response.status_code

        statuses: list[int] = []
        for _ in range(3):
            statuses += await asyncio.gather(*(one() for _ in range(50)))
    gateway.flush()
    rows = [r for r in gateway.usage_rows(key) if r["status"] == 200]
    spent = gateway.key_record(key).spent_micro
    assert statuses.count(200) == len(rows) == len(fake.calls) >= 9
    assert spent == sum(r["cost_micro"] for r in rows) == price * len(rows)
    assert spent <= budget + price, "at most one image over budget"
    assert statuses[-50:] == [429] * 50


def test_billing_usage_includes_images(gateway: Gateway, fake: FakeImages, sdk: SdkFactory) -> None:
    key = gateway.create_key("img", budget_micro=10_000_000)
    sdk(gateway, key).images.generate(model="dall-e-3", prompt="a bell")
    gateway.flush()
    response = httpx.get(f"{gateway.url}/v1/dashboard/billing/usage",
                         headers={"authorization": f"Bearer {key}"})  # fmt: skip
    assert response.status_code == 200
    assert response.json()["total_usage"] == pytest.approx(DALLE3_STANDARD / 10_000)  # cents
