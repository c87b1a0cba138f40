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
from sluice.providers.cohere import CohereAdapter
from sluice.providers.configs import (
    AnthropicConfig,
    AzureConfig,
    ChannelConfig,
    CohereConfig,
    GeminiConfig,
    LocalAudioConfig,
    LocalConfig,
    MidjourneyProxyConfig,
    OpenAICompatibleConfig,
    OpenAIConfig,
    SunoApiConfig,
    type_name,
)
from sluice.providers.gemini import GeminiAdapter
from sluice.providers.openai import OpenAIAdapter
from sluice.providers.task_channel import TaskOnlyAdapter

__all__ = ["PROVIDERS", "Provider", "adapter_for", "supported_types"]

C = TypeVar("C", bound=ChannelConfig)


@dataclass(frozen=True, slots=True)
class Provider(Generic[C]):
    """A provider: its channel config type and a factory of a channel's adapter from its
    config (an adapter may keep what it needs of it, e.g. the models served over another API)."""

    config: type[C]
    adapter: Callable[[C], Adapter[C]]

    @property
    def type(self) -> str:
        return type_name(self.config)


def _providers(*providers: Provider[Any]) -> Mapping[str, Provider[Any]]:
    return MappingProxyType({p.type: p for p in providers})


PROVIDERS = _providers(
    Provider(OpenAIConfig, lambda c: OpenAIAdapter("openai", True, c.responses_models)),
    Provider(OpenAICompatibleConfig, lambda c: OpenAIAdapter(c.type, False, c.responses_models)),
    Provider(LocalConfig, lambda c: OpenAIAdapter("local")),
    Provider(LocalAudioConfig, lambda c: OpenAIAdapter("local-audio")),
    Provider(AnthropicConfig, lambda c: AnthropicAdapter()),
    Provider(AzureConfig, lambda c: AzureAdapter()),
    Provider(GeminiConfig, lambda c: GeminiAdapter()),
    Provider(MidjourneyProxyConfig, lambda c: TaskOnlyAdapter("midjourney-proxy")),
    Provider(SunoApiConfig, lambda c: TaskOnlyAdapter("suno-api")),
    Provider(CohereConfig, lambda c: CohereAdapter()),
)


def supported_types() -> list[str]:
    return sorted(PROVIDERS)


def adapter_for(config: ChannelConfig) -> Adapter[Any] | None:
    """The adapter of a channel (None for a type no provider registered)."""
    provider = PROVIDERS.get(config.type)
    return None if provider is None else provider.adapter(config)
