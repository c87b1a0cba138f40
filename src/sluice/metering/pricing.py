"""Prices as data: the shipped table plus config overrides, in integer micro-dollars.

A price is held as micro-dollars per one million tokens (an integer), so the cost of a call is
exact integer arithmetic: ``tokens * price // 1_000_000`` rounded half up.

The other metered units (images, audio seconds, characters, search units, calls) are priced
the same way: micro-dollars per one million units, an integer. A request's cost is the sum of
``count * rate`` over every unit, divided by one million and rounded half up **once**, so no
unit is rounded on its own and any price with at most 12 decimals of a dollar per unit
(``$0.0001`` per audio second, ``$0.000015`` per character) is exact.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import msgspec
import yaml

from sluice.core import MeteredUnits, UsageTokens  # re-exported: neutral core types
from sluice.errors import InvalidRequest
from sluice.settings import ChannelConfig, ModelPrice, PricingConfig

__all__ = [
    "MeteredUnits",
    "NO_UNIT_RATES",
    "ModelRate",
    "PriceBook",
    "UnitRates",
    "UsageTokens",
    "cheaper_alias_warnings",
    "usd_to_micro",
]

_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest|preview(-\d{2}-\d{2})?)$")
_MICRO = 1_000_000


def usd_to_micro(usd: float) -> int:
    return round(usd * _MICRO)


def _micro_per_million(usd: float | None, per: int = 1) -> int:
    """A price of ``usd`` per ``per`` units as micro-dollars per one million units, from the
    decimal the price was written as (not its nearest binary float)."""
    exact = Decimal(repr(usd or 0.0)) * (_MICRO * _MICRO) / per
    return int(exact.to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class UnitRates:
    """Micro-dollars per one million units, like the token rates (see the module docstring)."""

    images: tuple[tuple[str, int], ...] = ()  # ("SIZE/QUALITY" or "SIZE", rate), sorted
    audio_second: int = 0
    character: int = 0
    search_unit: int = 0
    call: int = 0
    video_second: int = 0

    def image_rate(self, variant: str) -> int:
        """The exact ``SIZE/QUALITY``, then the ``SIZE`` alone, then the dearest listed image:
        an image of a size or quality without its own price never costs less than a known one."""
        prices = dict(self.images)
        rate = prices.get(variant)
        if rate is None:
            rate = prices.get(variant.split("/", 1)[0])
        if rate is None:
            rate = max(prices.values(), default=0)
        return rate

    def amount(self, units: MeteredUnits) -> int:
        """Micro-dollars times one million: not rounded (ModelRate.cost rounds once)."""
        total = (
            units.audio_seconds * self.audio_second
            + units.characters * self.character
            + units.search_units * self.search_unit
            + units.calls * self.call
            + units.video_seconds * self.video_second
        )
        if units.images:
            total += units.images * self.image_rate(units.image_variant)
        return total

    def upper(self, other: UnitRates) -> UnitRates:
        """Per unit (and per image variant) the larger of the two."""
        keys = sorted({k for k, _ in self.images} | {k for k, _ in other.images})
        images = tuple((k, max(self.image_rate(k), other.image_rate(k))) for k in keys)
        return UnitRates(
            images,
            max(self.audio_second, other.audio_second),
            max(self.character, other.character),
            max(self.search_unit, other.search_unit),
            max(self.call, other.call),
            max(self.video_second, other.video_second),
        )

    @classmethod
    def from_price(cls, price: ModelPrice) -> UnitRates:
        rates = cls(
            images=tuple(sorted((k, _micro_per_million(v)) for k, v in price.per_image.items())),
            audio_second=_micro_per_million(price.per_audio_second),
            character=_micro_per_million(price.per_1m_characters, per=_MICRO),
            search_unit=_micro_per_million(price.per_search_unit),
            call=_micro_per_million(price.per_call),
            video_second=_micro_per_million(price.per_video_second),
        )
        # The shared instance when nothing but tokens is priced: ``is`` tests it cheaply.
        return NO_UNIT_RATES if rates == NO_UNIT_RATES else rates


NO_UNIT_RATES = UnitRates()


@dataclass(frozen=True, slots=True)
class ModelRate:
    """Micro-dollars per one million tokens (and per one million of each other unit)."""

    input: int
    output: int
    cached_input: int
    cache_write: int
    units: UnitRates = NO_UNIT_RATES
    image_input: int | None = None  # image input tokens (gpt-image edits); None: as ``input``

    def upper(self, other: ModelRate) -> ModelRate:
        """Per token kind the larger of the two: an upper bound of either."""
        image_input = None
        if self.image_input is not None or other.image_input is not None:
            image_input = max(self.image_input_rate, other.image_input_rate)
        return ModelRate(
            max(self.input, other.input),
            max(self.output, other.output),
            max(self.cached_input, other.cached_input),
            max(self.cache_write, other.cache_write),
            self.units if self.units == other.units else self.units.upper(other.units),
            image_input,
        )

    @property
    def image_input_rate(self) -> int:
        return self.input if self.image_input is None else self.image_input

    def cost(self, usage: UsageTokens) -> int:
        cached = min(usage.cached, usage.prompt)
        cache_write = min(usage.cache_write, usage.prompt - cached)
        plain = usage.prompt - cached - cache_write
        total = (
            cached * self.cached_input
            + cache_write * self.cache_write
            + usage.completion * self.output
        )
        if usage.image_prompt:
            image = min(usage.image_prompt, plain)
            plain -= image
            total += image * self.image_input_rate
        total += plain * self.input
        units = usage.units
        # Units whose tokens the upstream reported are billed by those tokens when the model
        # has token prices (gpt-image: OpenAI bills its tokens; the per-image table is only
        # what those tokens typically cost), else per unit.
        if units is not None and not (units.tokens_reported and (self.input or self.output)):
            total += self.units.amount(units)
        return (total + _MICRO // 2) // _MICRO

    @classmethod
    def from_usd(
        cls, input: float, output: float, cached_input: float | None, cache_write: float | None
    ) -> ModelRate:
        return cls(
            input=usd_to_micro(input),
            output=usd_to_micro(output),
            cached_input=usd_to_micro(input if cached_input is None else cached_input),
            cache_write=usd_to_micro(input if cache_write is None else cache_write),
        )

    @classmethod
    def from_price(cls, price: ModelPrice) -> ModelRate:
        """A configured (or shipped) price: tokens as ``from_usd``, other units exactly."""
        tokens = cls.from_usd(
            price.input or 0.0, price.output, price.cached_input, price.cache_write
        )
        units = UnitRates.from_price(price)
        image_input = None if price.image_input is None else usd_to_micro(price.image_input)
        return cls(
            tokens.input, tokens.output, tokens.cached_input, tokens.cache_write, units, image_input
        )


FREE = ModelRate(0, 0, 0, 0)


def _load_shipped() -> dict[str, ModelRate]:
    text = resources.files("sluice.metering.data").joinpath("prices.yaml").read_text("utf-8")
    table: dict[str, ModelRate] = {}
    for provider_models in (yaml.safe_load(text) or {}).values():
        for model, price in provider_models.items():
            # The same schema as pricing.overrides in the config file.
            table[str(model)] = ModelRate.from_price(msgspec.convert(price, ModelPrice))
    return table


class PriceBook:
    """Resolves a model name to its rate; built once per config load."""

    def __init__(self, config: PricingConfig, shipped: dict[str, ModelRate] | None = None) -> None:
        self._table = dict(_load_shipped() if shipped is None else shipped)
        # Override keys may be globs ("my-org/*"); those are tried before the shipped table.
        self._patterns: list[tuple[str, ModelRate]] = []
        for model, price in config.overrides.items():
            rate = ModelRate.from_price(price)
            if any(ch in model for ch in "*?["):
                self._patterns.append((model, rate))
            else:
                self._table[model] = rate
        self._policy = config.unpriced_policy
        self._prefixes = sorted(self._table, key=len, reverse=True)
        self._cache: dict[str, ModelRate | None] = {}

    def exact(self, model: str) -> ModelRate | None:
        """The model's own price: listed under its exact name or matched by a config glob."""
        rate = self._table.get(model)
        if rate is None:
            rate = next((r for p, r in self._patterns if fnmatch.fnmatchcase(model, p)), None)
        return rate

    def find(self, model: str) -> ModelRate | None:
        """The price of an upstream model: exact, then without provider prefix or date suffix,
        then the longest listed prefix (``gpt-4o-2024-08-06`` is priced as ``gpt-4o``)."""
        if model in self._cache:
            return self._cache[model]
        rate = self.exact(model)
        if rate is None:
            base = model.rsplit("/", 1)[-1]
            while rate is None and base:
                rate = self._table.get(base)
                stripped = _DATE_SUFFIX.sub("", base)
                if stripped == base:
                    break
                base = stripped
        if rate is None:
            rate = next((self._table[p] for p in self._prefixes if model.startswith(p + "-")), None)
        if len(self._cache) < 10_000:
            self._cache[model] = rate
        return rate

    def served_rate(
        self, model: str, upstream_model: str, *, units: bool = False
    ) -> ModelRate | None:
        """What a call to ``upstream_model`` (a channel's ``model_map`` target of the requested
        ``model``) costs, or None when neither has a price.

        The model actually called is priced, never the alias: a cheaper name mapped to an
        expensive model must not bill the cheap price. Only when the upstream name has no price
        at all (an Azure deployment name, a local file) does the alias's *own* price count —
        its exact name or a config glob, never a fuzzy match of the alias.

        ``units``: the endpoint meters units besides tokens (images, seconds, calls), so a
        price in units only counts; a token endpoint treats such a model as unpriced.
        """
        priced = _any_price if units else _token_priced
        rate = priced(self.find(upstream_model))
        if rate is None and upstream_model != model:
            rate = priced(self.exact(model))
        return rate

    def unpriced(self, model: str) -> ModelRate:
        """The unpriced-model policy's answer: free, or 400 ``model_not_priced``."""
        if self._policy == "free":
            return FREE
        raise InvalidRequest(
            f"model '{model}' has no price configured and the unpriced-model policy is 'reject'; "
            "ask the operator to add it under pricing.overrides",
            param="model",
            code="model_not_priced",
        )

    def reservation_rate(
        self, model: str, upstream_names: Iterable[str], *, units: bool = False
    ) -> ModelRate:
        """An upper bound of what any candidate channel's call may cost, per token kind.

        Whichever channel serves the request, it is settled at no more than this rate, so the
        reservation holds. Any candidate without a price applies the unpriced policy.
        """
        bound: ModelRate | None = None
        for upstream in upstream_names:
            rate = self.served_rate(model, upstream, units=units)
            if rate is None:
                rate = self.unpriced(model)
            bound = rate if bound is None or bound == rate else bound.upper(rate)
        return self.unpriced(model) if bound is None else bound

    def settlement_rate(
        self, model: str, upstream_model: str | None, reserved: ModelRate, *, units: bool = False
    ) -> ModelRate:
        """The rate of the model that served the request; ``reserved`` when none did (or when
        a reload since admission left it unpriced: settlement must not fail)."""
        if upstream_model is None:
            return reserved
        rate = self.served_rate(model, upstream_model, units=units)
        if rate is None:
            return FREE if self._policy == "free" else reserved
        return rate


def _any_price(rate: ModelRate | None) -> ModelRate | None:
    return rate


def _token_priced(rate: ModelRate | None) -> ModelRate | None:
    """``rate`` unless it prices only units besides tokens (``dall-e-3``, ``whisper-1``): the
    token endpoints treat such a model as unpriced, as before it had a price, rather than free."""
    if rate is None or rate.units is NO_UNIT_RATES:
        return rate
    tokens_free = not (rate.input or rate.output or rate.cached_input or rate.cache_write)
    return None if tokens_free else rate


def cheaper_alias_warnings(book: PriceBook, channels: Iterable[ChannelConfig]) -> list[str]:
    """``model_map`` aliases whose own name is priced below the model they call.

    Requests are billed at the target's price, but an alias that looks cheaper (``gpt-4o-mini``
    mapped to ``gpt-4o``) misleads whoever reads the price list: ``sluice config check`` says so.
    """
    warnings: list[str] = []
    for channel in channels:
        for alias, target in channel.model_map.items():
            alias_rate, target_rate = book.find(alias), book.find(target)
            if alias == target or alias_rate is None or target_rate is None:
                continue
            if alias_rate.input < target_rate.input or alias_rate.output < target_rate.output:
                warnings.append(
                    f"channel {channel.name}: alias '{alias}' is priced below its target "
                    f"'{target}'; requests for it are billed at the price of '{target}'"
                )
    return warnings
