"""Channel type -> adapter. Adding a provider adds one line here."""

from __future__ import annotations

from collections.abc import Callable

from sluice.providers.anthropic import AnthropicAdapter
from sluice.providers.azure import AzureAdapter
from sluice.providers.base import Adapter
from sluice.providers.gemini import GeminiAdapter
from sluice.providers.openai import OpenAIAdapter

__all__ = ["adapter_for", "supported_types"]

_FACTORIES: dict[str, Callable[[], Adapter]] = {
    "openai": lambda: OpenAIAdapter("openai"),
    "openai-compatible": lambda: OpenAIAdapter("openai-compatible"),
    "local": lambda: OpenAIAdapter("local"),
    "anthropic": AnthropicAdapter,
    "azure": AzureAdapter,
    "gemini": GeminiAdapter,
}


def supported_types() -> list[str]:
    return sorted(_FACTORIES)


def adapter_for(channel_type: str) -> Adapter | None:
    factory = _FACTORIES.get(channel_type)
    return None if factory is None else factory()
