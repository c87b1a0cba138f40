"""Offline token counting and integer-money pricing."""

from __future__ import annotations

import pytest

from sluice.metering.pricing import ModelRate, PriceBook, UsageTokens
from sluice.metering.tokens import TokenCounter
from sluice.settings import ModelPrice, PricingConfig


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def test_cl100k_ids_match_openai(counter: TokenCounter) -> None:
    # Known cl100k_base encodings (OpenAI's published vocabulary).
    assert counter._get().encode_ordinary("Hello world, how are you?") == [
        9906, 1917, 11, 1268, 527, 499, 30,
    ]  # fmt: skip
    assert counter.count_text("") == 0


def test_message_accounting(counter: TokenCounter) -> None:
    one = counter.count_messages([{"role": "user", "content": "hi"}])
    assert one == 3 + 3 + 1  # priming + per-message framing + "hi"
    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert counter.count_messages([{"role": "user", "content": parts}]) > one + 500
    assert counter.count_prompt([[1, 2, 3], "hi"]) == 4


def test_rate_cost_is_exact_integer_micro_dollars() -> None:
    rate = ModelRate.from_usd(input=2.5, output=10.0, cached_input=1.25, cache_write=None)
    usage = UsageTokens(prompt=1000, completion=500, cached=400)
    # 600 * 2.5 + 400 * 1.25 + 500 * 10 = 7000 micro-dollars
    assert rate.cost(usage) == 7000
    assert ModelRate.from_usd(0.15, 0.6, None, None).cost(UsageTokens(prompt=3)) == 0


def test_price_lookup_rules() -> None:
    book = PriceBook(PricingConfig(overrides={"team-*": ModelPrice(input=1.0)}))
    gpt4o = book.find("gpt-4o")
    assert gpt4o is not None and gpt4o.input == 2_500_000
    assert book.find("gpt-4o-2024-08-06") == gpt4o, "date suffixes fall back to the base model"
    assert book.find("openai/gpt-4o") == gpt4o
    assert book.find("team-model") is not None
    assert book.find("unknown-model") is None
    assert book.reservation_rate("alias", ["gpt-4o"]) == gpt4o
