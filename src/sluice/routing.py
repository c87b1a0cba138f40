"""Channel choice: priority tiers, weighted random within a tier, never the same channel twice.

``Router`` is rebuilt on every config load; it is immutable and cheap to query. Health
(circuit state) is consulted through the ``ChannelHealth`` protocol so it can be in-process or
shared.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from sluice.core import FailureKind
from sluice.providers.base import Adapter
from sluice.providers.configs import ServedEndpoint
from sluice.providers.registry import adapter_for
from sluice.settings import ChannelConfig, Settings

__all__ = ["Channel", "ChannelHealth", "Router", "build_router"]

log = logging.getLogger("sluice.routing")


@dataclass(frozen=True, slots=True)
class Channel:
    config: ChannelConfig
    adapter: Adapter[Any]

    @property
    def name(self) -> str:
        return self.config.name


class ChannelHealth(Protocol):
    def available(self, channel: str, model: str) -> bool: ...

    def record_success(self, channel: str, model: str) -> None: ...

    def record_failure(self, channel: str, model: str, kind: FailureKind) -> None: ...

    def cool_down(self, channel: str, seconds: float) -> None:
        """The channel asked for a pause (Retry-After): try it last until then."""
        ...

    def cooling_down(self, channel: str) -> bool: ...

    # Management (admin API, health probe); see sluice.health for the in-memory version.
    def enable(self, channel: str) -> bool: ...

    def disable(self, channel: str, reason: str) -> None: ...

    def disabled_channels(self) -> list[str]: ...

    def snapshot(self, channel: str) -> dict[str, Any]: ...


class Router:
    def __init__(self, channels: list[Channel], rng: random.Random | None = None) -> None:
        self._channels = channels
        self._rng = rng or random.Random()
        self._cache: dict[str, tuple[Channel, ...]] = {}

    @property
    def channels(self) -> list[Channel]:
        return list(self._channels)

    def candidates(self, model: str) -> tuple[Channel, ...]:
        found = self._cache.get(model)
        if found is None:
            found = tuple(c for c in self._channels if c.config.serves(model))
            if len(self._cache) < 10_000:
                self._cache[model] = found
        return found

    def has_model(self, model: str) -> bool:
        return bool(self.candidates(model))

    def listed_models(self) -> dict[str, str]:
        """Concrete model names (globs cannot be listed) -> owning channel type."""
        out: dict[str, str] = {}
        for channel in self._channels:
            names = [m for m in channel.config.models if not any(ch in m for ch in "*?[")]
            for name in [*names, *channel.config.model_map]:
                out.setdefault(name, channel.config.type)
        return out

    def plan(
        self, model: str, endpoint: ServedEndpoint, health: ChannelHealth
    ) -> Iterator[Channel]:
        """Channels to try in order: higher priority first, weighted random inside a tier.

        Channels whose circuit is open are skipped; channels that asked for a pause
        (Retry-After) come after all the others, as a last resort; a channel is never yielded
        twice.
        """
        usable = [
            c
            for c in self.candidates(model)
            if c.config.serves_endpoint(endpoint) and health.available(c.name, model)
        ]
        resting = [c for c in usable if health.cooling_down(c.name)]
        if resting:
            usable = [c for c in usable if c not in resting]
        for group in (usable, resting):
            for priority in sorted({c.config.priority for c in group}, reverse=True):
                tier = [c for c in group if c.config.priority == priority]
                while tier:
                    chosen = self._pick(tier)
                    tier.remove(chosen)
                    yield chosen

    def _pick(self, tier: list[Channel]) -> Channel:
        weights = [c.config.weight for c in tier]
        total = sum(weights)
        if total <= 0:
            return tier[0]
        point = self._rng.uniform(0, total)
        for channel, weight in zip(tier, weights, strict=True):
            point -= weight
            if point < 0:
                return channel
        return next(c for c, w in zip(tier, weights, strict=True) if w > 0)


def build_router(settings: Settings, local_endpoints: Mapping[str, str]) -> Router:
    channels: list[Channel] = []
    for config in settings.channels:
        if not config.enabled:
            continue
        adapter = adapter_for(config)
        if adapter is None:
            log.warning("channel %s: type %s is not supported; skipped", config.name, config.type)
            continue
        if config.capabilities.managed_server is not None:
            base_url = local_endpoints.get(config.name)
            if base_url is None:
                log.warning("channel %s: its managed server is not running; skipped", config.name)
                continue
            config = msgspec.structs.replace(config, base_url=base_url)
        channels.append(Channel(config=config, adapter=adapter))
    return Router(channels)
