"""Channel type -> (config Struct, adapter). Adding a provider adds one line here.

The config Struct (``sluice.providers.configs``) holds the provider's fields and capabilities;
its tag is the ``type`` key of the config file, so the name is not repeated here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from sluice.providers.anthropic import AnthropicAdapter
from sluice.providers.azure import AzureAdapter
from sluice.providers.base import Adapter
from sluice.providers.configs import (
    AnthropicConfig,
    AzureConfig,
    ChannelConfig,
    GeminiConfig,
    LocalConfig,
    OpenAICompatibleConfig,
    OpenAIConfig,
    type_name,
)
from sluice.providers.gemini import GeminiAdapter
from sluice.providers.openai import OpenAIAdapter

__all__ = ["PROVIDERS", "Provider", "adapter_for", "supported_types"]

C = TypeVar("C", bound=ChannelConfig)


@dataclass(frozen=True, slots=True)
class Provider(Generic[C]):
    """A provider: its channel config type and a factory of its adapter for that config."""

    config: type[C]
    adapter: Callable[[], Adapter[C]]

    @property
    def type(self) -> str:
        return type_name(self.config)


def _providers(*providers: Provider[Any]) -> Mapping[str, Provider[Any]]:
    return MappingProxyType({p.type: p for p in providers})


PROVIDERS = _providers(
    Provider(OpenAIConfig, lambda: OpenAIAdapter("openai", reasoning_rules=True)),
    Provider(OpenAICompatibleConfig, lambda: OpenAIAdapter("openai-compatible")),
    Provider(LocalConfig, lambda: OpenAIAdapter("local")),
    Provider(AnthropicConfig, AnthropicAdapter),
    Provider(AzureConfig, AzureAdapter),
    Provider(GeminiConfig, GeminiAdapter),
)


def supported_types() -> list[str]:
    return sorted(PROVIDERS)


def adapter_for(channel_type: str) -> Adapter[Any] | None:
    provider = PROVIDERS.get(channel_type)
    return None if provider is None else provider.adapter()
