"""Images metering and the typed-event stream pass-through, without servers: what is billed
when both a per-image and a per-token price exist, image input tokens at their own rate, the
reservation as an upper bound, and events relayed byte for byte."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from sluice.core import MeteredUnits, UsageTokens
from sluice.endpoints import default_specs
from sluice.endpoints.spec import EndpointSpec, EstimateInput, MeterInput
from sluice.errors import InvalidRequest
from sluice.metering.pricing import PriceBook
from sluice.metering.tokens import TokenCounter
from sluice.providers.openai import usage_from_openai
from sluice.providers.openai_events import EventStreamTranslator
from sluice.relay.multipart import SpooledForm
from sluice.settings import PricingConfig

SPECS = {spec.name: spec for spec in default_specs()}
BOOK = PriceBook(PricingConfig())
SIZES = ("1024x1024", "1024x1536", "1536x1024")
QUALITIES = ("low", "medium", "high")
OUTPUT_TOKENS = {"low": (272, 408, 400), "medium": (1056, 1584, 1568), "high": (4160, 6240, 6208)}


def _rate(model: str) -> Any:
    rate = BOOK.find(model)
    assert rate is not None
    return rate


def test_reported_tokens_win_over_the_per_image_price_for_gpt_image() -> None:
    rate = _rate("gpt-image-1")
    images = MeteredUnits(images=2, image_variant="1024x1024/high")
    assert rate.cost(UsageTokens(units=images)) == 2 * 167_000  # no tokens: per image
    reported = MeteredUnits(images=2, image_variant="1024x1024/high", tokens_reported=True)
    usage = UsageTokens(prompt=30, completion=8320, image_prompt=20, units=reported)
    # text 10 x $5, image input 20 x $10, output 8320 x $40 (per 1M): micro-dollars
    assert rate.cost(usage) == 10 * 5 + 20 * 10 + 8320 * 40


def test_a_model_priced_only_per_image_is_billed_per_image_even_with_tokens() -> None:
    reported = MeteredUnits(images=1, image_variant="1024x1024/standard", tokens_reported=True)
    assert _rate("dall-e-3").cost(UsageTokens(prompt=50, completion=10, units=reported)) == 40_000


def test_image_input_tokens_default_to_the_input_rate() -> None:
    rate = _rate("gpt-4o")
    plain = rate.cost(UsageTokens(prompt=1000))
    assert rate.cost(UsageTokens(prompt=1000, image_prompt=400)) == plain
    assert _rate("gpt-image-1").cost(UsageTokens(prompt=1000, image_prompt=400)) == 600 * 5 + 4000


def test_usage_from_openai_reads_the_image_part_of_the_input() -> None:
    details = {"text_tokens": 10, "image_tokens": 40}
    reported = {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
                "input_tokens_details": details}  # fmt: skip
    usage = usage_from_openai(reported)
    assert usage == UsageTokens(prompt=50, completion=50, image_prompt=40)


def _estimate(spec: EndpointSpec, body: dict[str, Any]) -> tuple[Any, Any]:
    view = spec.validate(body)
    upload = SpooledForm([]) if spec.body == "multipart" else None  # its files are in ``body``
    given = EstimateInput(body, view, TokenCounter(), 4096, upload)
    return view, spec.estimate(given)


@pytest.mark.parametrize(("size", "quality"), list(itertools.product(SIZES, QUALITIES)))
def test_the_reservation_bounds_both_ways_of_billing(size: str, quality: str) -> None:
    spec, rate = SPECS["images"], _rate("gpt-image-1")
    prompt = "a detailed city skyline at night " * 20
    body = {"model": "gpt-image-1", "prompt": prompt, "size": size, "quality": quality, "n": 3}
    view, estimate = _estimate(spec, body)
    held = rate.cost(
        UsageTokens(estimate.prompt_tokens, estimate.completion_tokens, units=estimate.units)
    )
    output = 3 * OUTPUT_TOKENS[quality][SIZES.index(size)]
    variant = f"{size}/{quality}"
    per_image = rate.cost(UsageTokens(units=MeteredUnits(images=3, image_variant=variant)))
    tokens = rate.cost(
        UsageTokens(prompt=estimate.prompt_tokens, completion=output,
                    units=MeteredUnits(images=3, image_variant=variant, tokens_reported=True))
    )  # fmt: skip
    assert held >= per_image and held >= tokens
    # "auto" quality and size: the dearest image of the model is held.
    _, auto = _estimate(spec, {"model": "gpt-image-1", "prompt": "x", "n": 3})
    assert auto.completion_tokens == 3 * 6240


def test_dall_e_reserves_per_image_only() -> None:
    view, estimate = _estimate(SPECS["images"], {"model": "dall-e-3", "prompt": "a cat"})
    assert (estimate.prompt_tokens, estimate.completion_tokens) == (0, 0)
    assert estimate.units == MeteredUnits(images=1)
    # An empty variant matches no listed size: the dearest dall-e-3 image is held.
    assert _rate("dall-e-3").cost(UsageTokens(units=estimate.units)) == 120_000


def test_edit_inputs_are_reserved_per_image() -> None:
    form = {"model": "gpt-image-1", "prompt": "x", "n": "2", "quality": "low",
            "size": "1024x1024",
            "image[]": [{"filename": "a.png", "content_type": "image/png", "size": 10}] * 3,
            "mask": {"filename": "m.png", "content_type": "image/png", "size": 10}}  # fmt: skip
    view, estimate = _estimate(SPECS["image_edits"], form)
    assert view.n == 2 and view.model == "gpt-image-1"
    assert estimate.prompt_tokens >= 4 * 6_500 * 2
    assert estimate.completion_tokens == 2 * 272


def test_meter_counts_the_images_returned_with_their_variant() -> None:
    spec = SPECS["images"]
    body = {"model": "dall-e-3", "prompt": "x", "quality": "hd", "size": "1024x1792"}
    view, estimate = _estimate(spec, body)
    assert spec.units is not None
    units = spec.units(MeterInput(body, view, {"data": [{"url": "u"}]}, estimate))
    assert units == MeteredUnits(images=1, image_variant="1024x1792/hd")
    answer = {"data": [{}, {}], "size": "1536x1024", "quality": "high", "usage": {}}
    gpt = {"model": "gpt-image-1", "prompt": "x", "n": 2}
    gpt_view, gpt_estimate = _estimate(spec, gpt)
    reported = UsageTokens(prompt=3, completion=12_416)
    units = spec.units(MeterInput(gpt, gpt_view, answer, gpt_estimate, reported))
    assert units == MeteredUnits(images=2, image_variant="1536x1024/high", tokens_reported=True)
    assert spec.units(MeterInput(gpt, gpt_view, {"data": []}, gpt_estimate)) is None


def test_form_fields_are_checked_as_their_types() -> None:
    image = {"filename": "a.png", "content_type": "image/png", "size": 10}
    view = SPECS["image_variations"].validate({"image": image, "n": "4"})
    assert (view.model, view.n) == ("dall-e-2", 4)
    edit = SPECS["image_edits"].validate(
        {"image": image, "prompt": "x", "model": "gpt-image-1", "stream": "true"}
    )
    assert edit.stream
    with pytest.raises(InvalidRequest) as caught:
        SPECS["image_edits"].validate({"image": image, "prompt": "x", "n": "0"})
    assert caught.value.param == "n"


# --- the typed-event pass-through -------------------------------------------------------------


def _event(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **fields}) + b"\n\n"


PARTIAL = _event("image_generation.partial_image", b64_json="QUJD" * 5000, partial_image_index=0)
USAGE = {"total_tokens": 9, "input_tokens": 4, "output_tokens": 5,
         "input_tokens_details": {"text_tokens": 3, "image_tokens": 1}}  # fmt: skip
COMPLETED = _event("image_generation.completed", b64_json="REVG", usage=USAGE)


def test_events_are_relayed_byte_for_byte_however_they_are_split() -> None:
    stream = b": keep-alive\n\n" + PARTIAL + COMPLETED
    for step in (1, 7, 4096, len(stream)):
        translator = EventStreamTranslator(max_event_bytes=1 << 20)
        out = b"".join(
            b"".join(translator.feed(stream[at : at + step])) for at in range(0, len(stream), step)
        )
        out += b"".join(translator.close())
        assert out == PARTIAL + COMPLETED  # the comment is dropped, nothing else changes
        assert translator.usage == UsageTokens(prompt=4, completion=5, image_prompt=1)
        assert translator.failure is None
        assert translator.delivered_text() == ""


def test_crlf_streams_are_relayed_too() -> None:
    translator = EventStreamTranslator()
    frames = translator.feed((PARTIAL + COMPLETED).replace(b"\n", b"\r\n"))
    assert b"".join(frames) == PARTIAL + COMPLETED
    assert translator.close() == [] and translator.usage is not None


def test_a_stream_without_its_completed_event_is_truncated() -> None:
    translator = EventStreamTranslator()
    assert translator.feed(PARTIAL) == [PARTIAL]
    [frame] = translator.close()
    assert translator.failure is not None
    assert translator.failure.code == "upstream_stream_truncated"
    assert orjson.loads(frame[6:])["error"]["code"] == "upstream_stream_truncated"


def test_an_unterminated_last_event_still_completes_the_stream() -> None:
    translator = EventStreamTranslator()
    translator.feed(PARTIAL)
    frames = translator.close() if not translator.feed(COMPLETED[:-2]) else []
    assert b"".join(frames) == COMPLETED
    assert translator.failure is None and translator.usage is not None


def test_error_events_end_the_stream_with_the_secret_masked() -> None:
    secret = "sk-upstream-secret-0123456789abcdef"
    translator = EventStreamTranslator(secret=secret)
    error = {"type": "error", "error": {"message": f"bad key {secret}", "code": "oops"}}
    frames = translator.feed(PARTIAL + b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
    assert frames[0] == PARTIAL
    assert secret not in frames[1].decode()
    assert orjson.loads(frames[1][6:])["error"]["code"] == "oops"
    assert translator.failure is not None and translator.feed(COMPLETED) == []


def test_an_oversized_event_fails_the_stream() -> None:
    translator = EventStreamTranslator(max_event_bytes=1000)
    [frame] = translator.feed(PARTIAL)
    assert translator.failure is not None
    assert translator.failure.code == "upstream_response_too_large"
    assert b"error" in frame
