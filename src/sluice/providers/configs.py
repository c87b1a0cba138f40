"""Each provider's channel config: its own fields and its capabilities, selected by ``type``.

A channel in the config file is one of these Structs, a msgspec tagged union on ``type``
(``AnyChannelConfig``): the YAML keys are the fields, and a key that belongs to another type
is refused like any unknown key. What a provider can do (the endpoints it serves, whether its
upstream takes our request id, whether Sluice starts its server) is declared here, in its
``capabilities``, so the relay, routing and the CLI ask the config instead of testing type names.
Two capabilities come with fields and so are expressed by the base a config derives from:

- ``OpenAIWireConfig``: the upstream speaks the OpenAI wire format and takes
  ``stream_options`` (field ``stream_usage``);
- ``ImageInliningConfig``: the upstream takes images only as bytes, so Sluice fetches remote
  image URLs before calling it (field ``allow_private_image_urls``).

This module is a leaf (msgspec only): ``sluice.settings`` builds the config file's schema from
it, while the adapters (``sluice.providers.registry``) import ``sluice.settings`` themselves.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, get_args

import msgspec

from sluice.config_base import (
    ChannelName,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Secret,
    Strict,
)

if TYPE_CHECKING:
    from sluice.core import Endpoint

__all__ = [
    "CHANNEL_CONFIGS",
    "AnthropicConfig",
    "AnyChannelConfig",
    "AzureConfig",
    "Capabilities",
    "ChannelConfig",
    "CohereConfig",
    "ServedEndpoint",
    "GeminiConfig",
    "ImageInliningConfig",
    "LocalAudioConfig",
    "LocalConfig",
    "ManagedServer",
    "MidjourneyProxyConfig",
    "OpenAICompatibleConfig",
    "OpenAIConfig",
    "OpenAIWireConfig",
    "SunoApiConfig",
    "TaskChannelConfig",
    "owners_of_field",
    "type_name",
]

ALL_ENDPOINTS: frozenset[Endpoint] = frozenset({"chat", "completions", "embeddings", "moderations"})
AUDIO_ENDPOINTS: frozenset[Endpoint] = frozenset({"speech", "transcriptions", "translations"})

# The servers Sluice can start itself, one kind per config type that needs one: ``sluice serve``
# launches each kind its own way and routes the channel to the address it got.
ManagedServer = Literal["llama.cpp", "local-audio"]


class ServedEndpoint(Protocol):
    """What a channel needs to know of an endpoint spec (``sluice.endpoints.EndpointSpec``)."""

    @property
    def name(self) -> str: ...

    @property
    def openai_wire(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's channels can do, declared once per config type."""

    # Endpoint specs served by name (translated by the provider's adapter).
    endpoints: frozenset[Endpoint]
    # Speaks OpenAI's wire format at OpenAI's paths: serves every spec that is forwarded as
    # is (``EndpointSpec.openai_wire``: images, audio, rerank, ...), except those it ``lacks``.
    openai_wire: bool = False
    lacks: frozenset[Endpoint] = frozenset()
    # The upstream is sent ``x-request-id`` (the client's request id), so both logs match.
    request_id_header: bool = True
    # ``sluice config check`` requires a base_url (the local type gets its server's).
    needs_base_url: bool = True
    # Sluice starts the upstream itself (a child process of this kind) and routes to its
    # address; None: the channel's base_url is the upstream.
    managed_server: ManagedServer | None = None
    # Asynchronous task kinds the channel runs (``sluice.tasks``): "midjourney", "suno", "video".
    task_kinds: frozenset[str] = frozenset()


class ChannelConfig(Strict, frozen=True, tag_field="type"):
    """The fields every channel has; each provider's config adds its own."""

    capabilities: ClassVar[Capabilities]

    name: ChannelName
    base_url: str = ""
    api_key: Secret = Secret("")
    models: list[str] = msgspec.field(default_factory=list)
    model_map: dict[str, str] = msgspec.field(default_factory=dict)
    priority: int = 0
    weight: NonNegativeInt = 1
    timeout_s: PositiveFloat | None = None  # total; overrides timeouts.total_s
    connect_timeout_s: PositiveFloat | None = None
    first_byte_timeout_s: PositiveFloat | None = None
    idle_timeout_s: PositiveFloat | None = None
    enabled: bool = True
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # The model of the channel's test request (admin test, health probes); default: the first
    # concrete name in model_map / models. Pick one every key of the upstream account can use:
    # a probe answered 401/402/403 disables the channel.
    test_model: str | None = None
    # The endpoints this channel's upstream serves, when narrower than its type's (a vLLM
    # server without images); a request for another one never reaches it. None: all.
    endpoints: list[str] | None = None

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "base_url", self.base_url.rstrip("/"))
        if isinstance(self.api_key, str):  # built in code (tests, probes) rather than decoded
            msgspec.structs.force_setattr(self, "api_key", Secret(self.api_key))

    @property
    def type(self) -> str:
        """The ``type`` key of the config file (the tag of this Struct)."""
        return type_name(type(self))

    def serves(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models) or (
            model in self.model_map
        )

    def serves_endpoint(self, spec: ServedEndpoint) -> bool:
        name = spec.name
        if self.endpoints is not None and name not in self.endpoints:
            return False
        capabilities = self.capabilities
        if name in capabilities.endpoints:
            return True
        return capabilities.openai_wire and spec.openai_wire and name not in capabilities.lacks

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)

    def path_model(self, upstream_model: str) -> str | None:
        """The URL path segment ``upstream_model`` becomes, for providers that address models
        by path (checked by ``sluice config check``); None for those that send it in the body."""
        return None


class OpenAIWireConfig(ChannelConfig, frozen=True):
    """Upstreams speaking OpenAI's format, which take ``stream_options``."""

    # Whether the upstream honours stream_options.include_usage (llama.cpp's server does not).
    stream_usage: bool = True
    # Upstream models (globs) served only through the Responses API: chat completions for
    # them are sent as Responses requests and translated back (providers/chat_via_responses.py).
    responses_models: list[str] = msgspec.field(default_factory=list)


class ImageInliningConfig(ChannelConfig, frozen=True):
    """Upstreams that take images only as bytes: Sluice fetches remote image URLs for them."""

    allow_private_image_urls: bool = False


class TaskChannelConfig(ChannelConfig, frozen=True):
    """Upstreams that run asynchronous tasks only (no chat): how Sluice follows their tasks."""

    poll_interval_s: PositiveFloat = 5.0  # between two polls of one unfinished task
    # Result URLs (images, audio) handed to clients as the upstream gave them, or proxied
    # through Sluice (streamed), which hides the upstream's host from clients.
    proxy_results: bool = False
    # Ask the upstream to call Sluice back on progress (needs ``tasks.public_url``); polling
    # continues at the interval regardless, so a lost callback only delays a task.
    upstream_callbacks: bool = False


class OpenAIConfig(OpenAIWireConfig, frozen=True, tag="openai"):
    # OpenAI has no rerank endpoint: refused with a 400 rather than forwarded to a 404. Its own
    # /responses is passed through, not translated.
    capabilities = Capabilities(
        endpoints=ALL_ENDPOINTS | {"responses"},
        openai_wire=True,
        lacks=frozenset({"rerank"}),
        task_kinds=frozenset({"video"}),
    )


class OpenAICompatibleConfig(OpenAIWireConfig, frozen=True, tag="openai-compatible"):
    capabilities = Capabilities(endpoints=ALL_ENDPOINTS, openai_wire=True)


class LocalConfig(OpenAIWireConfig, frozen=True, tag="local"):
    """SmolLM2 (or another GGUF) served by a llama.cpp child process Sluice manages."""

    # The managed llama-cpp-python server is run for chat and completions: its embeddings mode
    # (``--embedding``) costs memory and, for a model without pooling such as SmolLM2, answers
    # one vector per token rather than per input; it has no moderations or rerank routes
    # (docs/providers.md, "The embedded default"). Its request-id plugin answers 400 to ids
    # that are not UUIDs.
    capabilities = Capabilities(
        endpoints=frozenset({"chat", "completions"}),
        request_id_header=False,
        needs_base_url=False,
        managed_server="llama.cpp",
    )

    model_path: str | None = None
    port: int | None = None  # of the managed llama.cpp server; default: a free one
    context_size: PositiveInt = 2048


class LocalAudioConfig(OpenAIWireConfig, frozen=True, tag="local-audio"):
    """Offline speech (hibari) and transcription (Whisper tiny.en) served by a child process
    Sluice manages (``sluice.local_audio.server``), at OpenAI's audio paths."""

    capabilities = Capabilities(
        endpoints=AUDIO_ENDPOINTS,
        needs_base_url=False,
        managed_server="local-audio",
    )

    port: int | None = None  # of the managed audio server; default: a free one
    threads: PositiveInt = 1  # cores each engine computes on


class AzureConfig(OpenAIWireConfig, frozen=True, tag="azure"):
    # Azure OpenAI has no moderations, image variations or rerank endpoint; the rest is
    # OpenAI's below a deployment. The Responses API is passed through (/openai/v1/responses).
    capabilities = Capabilities(
        endpoints=frozenset({"chat", "completions", "embeddings", "responses"}),
        openai_wire=True,
        lacks=frozenset({"moderations", "image_variations", "rerank"}),
        task_kinds=frozenset({"video"}),
    )

    api_version: str | None = None

    def path_model(self, upstream_model: str) -> str | None:
        return upstream_model  # the deployment


class AnthropicConfig(ImageInliningConfig, frozen=True, tag="anthropic"):
    # Anthropic has no embeddings, legacy completions or moderations endpoints.
    capabilities = Capabilities(endpoints=frozenset({"chat"}))


class GeminiConfig(ImageInliningConfig, frozen=True, tag="gemini"):
    capabilities = Capabilities(endpoints=frozenset({"chat", "embeddings"}))

    safety_settings: list[dict[str, Any]] = msgspec.field(default_factory=list)

    def path_model(self, upstream_model: str) -> str | None:
        return upstream_model.removeprefix("models/")


class MidjourneyProxyConfig(TaskChannelConfig, frozen=True, tag="midjourney-proxy"):
    """A midjourney-proxy server (or a compatible fork): its ``api_key`` goes in
    ``mj-api-secret``. Every Midjourney task may go to any such channel (no model list)."""

    capabilities = Capabilities(
        endpoints=frozenset(), request_id_header=False, task_kinds=frozenset({"midjourney"})
    )


class SunoApiConfig(TaskChannelConfig, frozen=True, tag="suno-api"):
    """A server speaking the Suno-API protocol (``/suno/submit/*``, ``/suno/fetch``)."""

    capabilities = Capabilities(
        endpoints=frozenset(), request_id_header=False, task_kinds=frozenset({"suno"})
    )


class CohereConfig(ChannelConfig, frozen=True, tag="cohere"):
    """Cohere's v2 API; rerank only (its chat is not translated)."""

    capabilities = Capabilities(endpoints=frozenset({"rerank"}), needs_base_url=False)


# What the config file's ``channels`` entries are parsed as. A provider's config joins here;
# its adapter is tied to it in ``sluice.providers.registry``.
AnyChannelConfig = (
    OpenAIConfig
    | OpenAICompatibleConfig
    | LocalConfig
    | LocalAudioConfig
    | AzureConfig
    | AnthropicConfig
    | GeminiConfig
    | MidjourneyProxyConfig
    | SunoApiConfig
    | CohereConfig
)
CHANNEL_CONFIGS: tuple[type[ChannelConfig], ...] = get_args(AnyChannelConfig)


def type_name(config: type[ChannelConfig]) -> str:
    return str(config.__struct_config__.tag)


def owners_of_field(field: str) -> list[str]:
    """The channel types that have ``field``, for config error messages."""
    return sorted(type_name(c) for c in CHANNEL_CONFIGS if field in c.__struct_fields__)
