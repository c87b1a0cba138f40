"""Metered units besides tokens: usage, prices (shipped and configured) and exact costs."""

from __future__ import annotations

import msgspec
import pytest

from sluice.errors import InvalidRequest
from sluice.metering.pricing import (
    FREE,
    NO_UNIT_RATES,
    MeteredUnits,
    ModelRate,
    PriceBook,
    UnitRates,
    UsageTokens,
)
from sluice.settings import ModelPrice, PricingConfig

MICRO = 1_000_000


def _price(**fields: object) -> ModelPrice:
    return msgspec.convert(fields, ModelPrice)


def _rate(**fields: object) -> ModelRate:
    return ModelRate.from_price(_price(**fields))


def _units(**counts: int | str) -> UsageTokens:
    return UsageTokens(units=MeteredUnits(**counts))  # type: ignore[arg-type]


def test_a_chat_usage_carries_no_units_and_costs_what_it_did() -> None:
    usage = UsageTokens(prompt=1000, completion=500, cached=200)
    assert usage.units is None
    rate = _rate(input=2.5, output=10.0, cached_input=1.25)
    assert rate.units == NO_UNIT_RATES
    # 800 * 2.5 + 200 * 1.25 + 500 * 10 micro-dollars per token / 1M ... = 7250 micro
    assert rate.cost(usage) == 7250
    assert rate == ModelRate.from_usd(2.5, 10.0, 1.25, None)


@pytest.mark.parametrize(
    ("price", "units", "micro"),
    [
        ({"per_image": {"1024/hd": 0.08}}, {"images": 3, "image_variant": "1024/hd"}, 240_000),
        ({"per_audio_second": 0.0001}, {"audio_seconds": 61}, 6_100),
        ({"per_1m_characters": 15.0}, {"characters": 4096}, 61_440),
        ({"per_1m_characters": 0.03}, {"characters": 4096}, 123),  # 122.88 -> 123
        ({"per_search_unit": 0.002}, {"search_units": 7}, 14_000),
        ({"per_call": 0.5}, {"calls": 2}, 1_000_000),
    ],
)  # fmt: skip
def test_each_unit_is_priced_exactly(
    price: dict[str, object], units: dict[str, int | str], micro: int
) -> None:
    assert _rate(**price).cost(_units(**units)) == micro


def test_a_unit_without_a_price_costs_nothing_and_a_price_without_usage_neither() -> None:
    rate = _rate(per_search_unit=0.002, per_call=0.01)
    assert rate.cost(_units(images=4, audio_seconds=10, characters=99)) == 0
    assert rate.cost(UsageTokens(prompt=10_000)) == 0


def test_mixed_usage_sums_every_unit_then_rounds_once() -> None:
    rate = _rate(
        input=1.0, output=2.0, per_1m_characters=15.0, per_audio_second=0.0001, per_call=0.0000004
    )
    usage = UsageTokens(
        prompt=1, completion=1, units=MeteredUnits(characters=1, audio_seconds=1, calls=1)
    )
    # micro-dollars: 1 (token in) + 2 (token out) + 15 (character) + 100 (second) + 0.4 (call)
    assert rate.cost(usage) == 118
    # 0.4 + 0.4 micro-dollars: each rounded alone would bill 0, the sum rounds to 1.
    tiny = _rate(per_call=0.0000004, per_search_unit=0.0000004)
    assert tiny.cost(_units(calls=1, search_units=1)) == 1
    assert tiny.cost(_units(calls=1)) == 0


def test_rounding_is_half_up_like_tokens() -> None:
    half = _rate(per_1m_characters=0.5)  # half a micro-dollar per character
    assert half.cost(_units(characters=1)) == 1
    assert half.cost(_units(characters=3)) == 2  # 1.5
    assert _rate(per_1m_characters=0.499999).cost(_units(characters=1)) == 0
    assert ModelRate.from_usd(0.5, 0, None, None).cost(UsageTokens(prompt=1)) == 1  # tokens: same


def test_prices_are_exact_decimals_not_binary_floats() -> None:
    # 0.1 + 0.2 style float error would move these by one unit of the rate.
    rate = _rate(per_audio_second=0.0001, per_call=0.07, per_search_unit=0.000015)
    assert rate.units.audio_second == 100 * MICRO
    assert rate.units.call == 70_000 * MICRO
    assert rate.units.search_unit == 15 * MICRO
    assert rate.cost(_units(search_units=1_000_000)) == 15 * MICRO
    # A price finer than a micro-dollar per unit still adds up exactly over many units.
    assert _rate(per_call=0.0000001).cost(_units(calls=10)) == 1


def test_image_price_by_size_and_quality_then_size_then_the_dearest() -> None:
    rate = _rate(per_image={"1024x1024/standard": 0.04, "1024x1024/hd": 0.08, "256x256": 0.016})
    cost = {v: rate.cost(_units(images=1, image_variant=v)) for v in (
        "1024x1024/standard", "1024x1024/hd", "256x256", "256x256/hd", "4096x4096/hd", ""
    )}  # fmt: skip
    assert cost == {
        "1024x1024/standard": 40_000,
        "1024x1024/hd": 80_000,
        "256x256": 16_000,
        "256x256/hd": 16_000,  # the size's own price, any quality
        "4096x4096/hd": 80_000,  # unknown: never below a known image
        "": 80_000,
    }
    assert _rate(input=1.0).cost(_units(images=2, image_variant="1024x1024")) == 0


def test_upper_bounds_both_rates_per_unit_and_image_variant() -> None:
    a = _rate(input=1.0, per_image={"1024x1024": 0.02, "512x512": 0.018}, per_call=0.01)
    b = _rate(input=2.0, per_image={"1024x1024/hd": 0.08}, per_search_unit=0.002)
    upper = a.upper(b)
    usages = [
        _units(images=1, image_variant=v)
        for v in ("1024x1024", "1024x1024/hd", "512x512", "512x512/hd", "9x9")
    ] + [_units(calls=1, search_units=3), UsageTokens(prompt=1_000_000)]
    for usage in usages:
        assert upper.cost(usage) >= max(a.cost(usage), b.cost(usage)), usage
    assert upper.cost(_units(calls=1, search_units=3)) == 10_000 + 6_000
    assert a.upper(a) == a and FREE.upper(FREE) == FREE


def test_shipped_list_prices() -> None:
    book = PriceBook(PricingConfig())

    def cost(model: str, **units: int | str) -> int:
        rate = book.find(model)
        assert rate is not None, model
        return rate.cost(_units(**units))

    assert cost("dall-e-3", images=1, image_variant="1024x1024/standard") == 40_000
    assert cost("dall-e-3", images=2, image_variant="1792x1024/hd") == 240_000
    assert cost("dall-e-2", images=1, image_variant="512x512") == 18_000
    assert cost("tts-1", characters=1_000_000) == 15 * MICRO
    assert cost("tts-1-hd", characters=1000) == 30_000
    assert cost("whisper-1", audio_seconds=60) == 6_000  # $0.006 per minute
    assert cost("rerank-v3.5", search_units=1000) == 2 * MICRO  # $2 per 1k searches
    gpt = book.find("gpt-4o")
    assert gpt is not None and gpt.units == NO_UNIT_RATES


def test_config_overrides_accept_unit_prices() -> None:
    config = msgspec.convert(
        {"overrides": {
            "my-images": {"per_image": {"1024x1024/hd": 0.1, "1024x1024": 0.05}},
            "my-tts-*": {"per_1m_characters": 12.0},
            "my-chat": {"input": 1.0, "output": 2.0, "per_call": 0.001},
        }},
        PricingConfig,
    )  # fmt: skip
    book = PriceBook(config, shipped={})
    images, tts, chat = book.find("my-images"), book.find("my-tts-v2"), book.find("my-chat")
    assert images is not None and tts is not None and chat is not None
    assert images.cost(_units(images=1, image_variant="1024x1024/standard")) == 50_000
    assert tts.cost(_units(characters=1000)) == 12_000
    usage = UsageTokens(prompt=1000, completion=1000, units=MeteredUnits(calls=1))
    assert chat.cost(usage) == 1000 + 2000 + 1000


@pytest.mark.parametrize(
    "price",
    [
        {},
        {"output": 1.0},  # input was required before units existed, and still is for tokens
        {"per_image": {}},
        {"per_image": {"": 0.1}},
        {"per_call": -0.1},
        {"per_second": 0.1},  # unknown field
    ],
)
def test_invalid_prices_are_refused(price: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(price, ModelPrice)


def test_unit_rates_stay_hashable_and_cheap_to_compare() -> None:
    rate = _rate(per_image={"a": 0.1, "b": 0.2})
    assert hash(rate) == hash(_rate(per_image={"b": 0.2, "a": 0.1}))
    assert UnitRates() == NO_UNIT_RATES


def test_a_model_priced_only_in_other_units_stays_unpriced_for_token_endpoints() -> None:
    config = msgspec.convert(
        {"overrides": {"my-chat": {"input": 1.0, "per_call": 0.01}}}, PricingConfig
    )
    book = PriceBook(config)
    whisper = book.find("whisper-1")
    assert whisper is not None and whisper.units.audio_second > 0
    # A chat request naming it is refused (unpriced policy) as before it had a price, not free.
    assert book.served_rate("whisper-1", "whisper-1") is None
    assert book.served_rate("my-alias", "dall-e-3") is None
    with pytest.raises(InvalidRequest):
        book.reservation_rate("tts-1", ["tts-1"])
    chat = book.served_rate("my-chat", "my-chat")
    assert chat is not None and chat.units.call == 10_000 * MICRO
    assert book.served_rate("gpt-4o", "gpt-4o") is book.find("gpt-4o")
