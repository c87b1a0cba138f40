"""Prices as data: the shipped table plus config overrides, in integer micro-dollars.

A price is held as micro-dollars per one million tokens (an integer), so the cost of a call is
exact integer arithmetic: ``tokens * price // 1_000_000`` rounded half up.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import yaml

from sluice.errors import InvalidRequest
from sluice.settings import PricingConfig

__all__ = ["ModelRate", "PriceBook", "UsageTokens", "usd_to_micro", "micro_to_usd"]

_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest|preview(-\d{2}-\d{2})?)$")
_MICRO = 1_000_000


def usd_to_micro(usd: float) -> int:
    return round(usd * _MICRO)


def micro_to_usd(micro: int) -> float:
    return micro / _MICRO


@dataclass(frozen=True, slots=True)
class UsageTokens:
    prompt: int = 0
    completion: int = 0
    cached: int = 0  # part of prompt read from the provider's prompt cache
    cache_write: int = 0  # part of prompt written to the provider's prompt cache


@dataclass(frozen=True, slots=True)
class ModelRate:
    """Micro-dollars per one million tokens."""

    input: int
    output: int
    cached_input: int
    cache_write: int

    def cost(self, usage: UsageTokens) -> int:
        cached = min(usage.cached, usage.prompt)
        cache_write = min(usage.cache_write, usage.prompt - cached)
        plain = usage.prompt - cached - cache_write
        total = (
            plain * self.input
            + cached * self.cached_input
            + cache_write * self.cache_write
            + usage.completion * self.output
        )
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


FREE = ModelRate(0, 0, 0, 0)


def _load_shipped() -> dict[str, ModelRate]:
    text = resources.files("sluice.metering.data").joinpath("prices.yaml").read_text("utf-8")
    table: dict[str, ModelRate] = {}
    for provider_models in (yaml.safe_load(text) or {}).values():
        for model, price in provider_models.items():
            table[str(model)] = ModelRate.from_usd(
                float(price["input"]),
                float(price.get("output", 0.0)),
                price.get("cached_input"),
                price.get("cache_write"),
            )
    return table


class PriceBook:
    """Resolves a model name to its rate; built once per config load."""

    def __init__(self, config: PricingConfig, shipped: dict[str, ModelRate] | None = None) -> None:
        self._table = dict(_load_shipped() if shipped is None else shipped)
        # Override keys may be globs ("my-org/*"); those are tried before the shipped table.
        self._patterns: list[tuple[str, ModelRate]] = []
        for model, price in config.overrides.items():
            rate = ModelRate.from_usd(price.input, price.output, price.cached_input, None)
            if any(ch in model for ch in "*?["):
                self._patterns.append((model, rate))
            else:
                self._table[model] = rate
        self._policy = config.unpriced_policy
        self._prefixes = sorted(self._table, key=len, reverse=True)
        self._cache: dict[str, ModelRate | None] = {}

    def find(self, model: str) -> ModelRate | None:
        if model in self._cache:
            return self._cache[model]
        rate = self._table.get(model)
        if rate is None:
            rate = next((r for p, r in self._patterns if fnmatch.fnmatchcase(model, p)), None)
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

    def rate_for(self, model: str, upstream_names: Iterable[str] = ()) -> ModelRate:
        """The rate to charge, or the unpriced policy's answer.

        The requested name is priced first; an alias (``model_map``) without a price of its own
        is priced as the upstream model it maps to.
        """
        rate = self.find(model)
        if rate is None:
            rate = next((r for r in map(self.find, upstream_names) if r is not None), None)
        if rate is not None:
            return rate
        if self._policy == "free":
            return FREE
        raise InvalidRequest(
            f"model '{model}' has no price configured and the unpriced-model policy is 'reject'; "
            "ask the operator to add it under pricing.overrides",
            param="model",
            code="model_not_priced",
        )
