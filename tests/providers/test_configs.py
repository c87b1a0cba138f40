"""Channel configs by provider type: each type parses with its own fields, refuses the fields of
other types, and declares its capabilities."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sluice.config_base import Secret
from sluice.endpoints import default_specs
from sluice.providers.configs import (
    CHANNEL_CONFIGS,
    AnthropicConfig,
    AnyChannelConfig,
    AzureConfig,
    ChannelConfig,
    CohereConfig,
    GeminiConfig,
    ImageInliningConfig,
    LocalAudioConfig,
    LocalConfig,
    MidjourneyProxyConfig,
    OpenAICompatibleConfig,
    OpenAIConfig,
    OpenAIWireConfig,
    SunoApiConfig,
    owners_of_field,
    type_name,
)
from sluice.settings import ConfigError, parse_settings

COMMON = {"name": "c", "base_url": "https://up.example/v1/", "api_key": "sk-1", "models": ["m"]}
SAFETY = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]

# type -> (config class, fields of its own with non-default values)
OWN_FIELDS: dict[str, tuple[type[ChannelConfig], dict[str, Any]]] = {
    "openai": (OpenAIConfig, {"stream_usage": False}),
    "openai-compatible": (OpenAICompatibleConfig, {"stream_usage": False}),
    "local": (
        LocalConfig,
        {"stream_usage": False, "model_path": "/m.gguf", "port": 8081, "context_size": 4096},
    ),
    "local-audio": (LocalAudioConfig, {"stream_usage": False, "port": 8082, "threads": 2}),
    "azure": (AzureConfig, {"stream_usage": False, "api_version": "2025-01-01-preview"}),
    "anthropic": (AnthropicConfig, {"allow_private_image_urls": True}),
    "gemini": (GeminiConfig, {"allow_private_image_urls": True, "safety_settings": SAFETY}),
    "midjourney-proxy": (
        MidjourneyProxyConfig,
        {"poll_interval_s": 2.0, "proxy_results": True, "upstream_callbacks": True},
    ),
    "suno-api": (
        SunoApiConfig,
        {"poll_interval_s": 2.0, "proxy_results": True, "upstream_callbacks": True},
    ),
    "cohere": (CohereConfig, {}),
}
TYPE_SPECIFIC = sorted({field for _, fields in OWN_FIELDS.values() for field in fields})


def parse_channel(channel: dict[str, Any]) -> ChannelConfig:
    return parse_settings({"channels": [channel]}).channels[0]


def test_the_union_is_every_registered_config_and_nothing_else() -> None:
    assert sorted(type_name(c) for c in CHANNEL_CONFIGS) == sorted(OWN_FIELDS)
    assert {OWN_FIELDS[type_name(c)][0] for c in CHANNEL_CONFIGS} == set(CHANNEL_CONFIGS)


@pytest.mark.parametrize("kind", sorted(OWN_FIELDS))
def test_each_type_parses_with_its_own_fields(kind: str) -> None:
    cls, own = OWN_FIELDS[kind]
    config = parse_channel({**COMMON, "type": kind, **own})
    assert type(config) is cls and config.type == kind
    assert config.base_url == "https://up.example/v1"  # normalised as before
    assert config.api_key == Secret("sk-1") and "sk-1" not in repr(config)
    for field, value in own.items():
        assert getattr(config, field) == value
    # Omitted, each field has the default it had when every channel had every field.
    bare = parse_channel({"name": "c", "type": kind})
    defaults = {
        "stream_usage": True, "allow_private_image_urls": False, "safety_settings": [],
        "model_path": None, "port": None, "context_size": 2048, "api_version": None,
        "poll_interval_s": 5.0, "proxy_results": False, "upstream_callbacks": False,
        "threads": 1,
    }  # fmt: skip
    for field in own:
        assert getattr(bare, field) == defaults[field]


@pytest.mark.parametrize(
    ("kind", "field"),
    [(k, f) for k in sorted(OWN_FIELDS) for f in TYPE_SPECIFIC if f not in OWN_FIELDS[k][1]],
)
def test_a_field_of_another_type_is_refused_naming_the_field_and_the_type(
    kind: str, field: str
) -> None:
    value = {
        **OWN_FIELDS["local"][1],
        **OWN_FIELDS["local-audio"][1],
        **OWN_FIELDS["azure"][1],
        **OWN_FIELDS["gemini"][1],
        **OWN_FIELDS["suno-api"][1],
    }[field]
    channels = [{"name": "ok", "type": "openai"}, {"name": "c", "type": kind, field: value}]
    with pytest.raises(ConfigError) as raised:
        parse_settings({"channels": channels})
    owners = owners_of_field(field)
    assert owners and kind not in owners
    message = str(raised.value)
    assert f"channels[1]: `{field}` is not a field of type '{kind}'" in message
    assert ", ".join(repr(o) for o in owners) in message


def test_owners_of_a_field() -> None:
    assert owners_of_field("api_version") == ["azure"]
    assert owners_of_field("safety_settings") == ["gemini"]
    assert owners_of_field("allow_private_image_urls") == ["anthropic", "gemini"]
    assert owners_of_field("stream_usage") == [
        "azure", "local", "local-audio", "openai", "openai-compatible",
    ]  # fmt: skip
    assert owners_of_field("context_size") == ["local"]
    assert owners_of_field("port") == ["local", "local-audio"]
    assert owners_of_field("threads") == ["local-audio"]
    assert owners_of_field("no_such_field") == []


def test_a_field_of_no_type_is_still_an_unknown_field() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_channel({"name": "c", "type": "azure", "api_versoin": "x"})
    assert "channels[0]: Object contains unknown field `api_versoin`" in str(raised.value)
    assert "(not a field of type 'azure')" in str(raised.value)


def test_a_missing_or_unknown_type_lists_the_types() -> None:
    every = (
        "anthropic, azure, cohere, gemini, local, local-audio, midjourney-proxy, openai, "
        "openai-compatible, suno-api"
    )
    with pytest.raises(ConfigError) as raised:
        parse_channel({"name": "c"})
    assert f"channels[0]: Object missing required field `type` (one of: {every})" in str(
        raised.value
    )
    with pytest.raises(ConfigError) as raised:
        parse_channel({"name": "c", "type": "smoke-signal"})
    assert f"channels[0].type: Invalid enum value 'smoke-signal' (expected one of: {every})" in str(
        raised.value
    )


@pytest.mark.parametrize("cls", CHANNEL_CONFIGS)
def test_a_config_round_trips_through_its_type_tag(cls: type[ChannelConfig]) -> None:
    original = cls(name="c", base_url="http://h/", models=["a", "b*"], model_map={"x": "y"})
    encoded = msgspec.to_builtins(original, enc_hook=lambda s: s.get_secret_value())
    assert encoded["type"] == type_name(cls) == original.type
    decoded = msgspec.convert(encoded, AnyChannelConfig, dec_hook=lambda _, v: Secret(v))
    assert type(decoded) is cls and decoded == original


# type -> (endpoints, request id header, base_url needed, managed server,
#          takes stream_options, images inlined by Sluice)
ALL = {"chat", "completions", "embeddings", "moderations"}
AUDIO = {"speech", "transcriptions", "translations"}
CAPABILITIES: dict[str, tuple[set[str], bool, bool, str | None, bool, bool]] = {
    "openai": (ALL | {"responses"}, True, True, None, True, False),  # /responses passed through
    "openai-compatible": (ALL, True, True, None, True, False),
    "local": ({"chat", "completions"}, False, False, "llama.cpp", True, False),
    "local-audio": (AUDIO, True, False, "local-audio", True, False),
    "azure": ({"chat", "completions", "embeddings", "responses"}, True, True, None, True,
              False),
    "anthropic": ({"chat"}, True, True, None, False, True),
    "gemini": ({"chat", "embeddings"}, True, True, None, False, True),
    "midjourney-proxy": (set(), False, True, None, False, False),
    "suno-api": (set(), False, True, None, False, False),
    "cohere": ({"rerank"}, True, False, None, False, False),
}  # fmt: skip


@pytest.mark.parametrize("cls", CHANNEL_CONFIGS)
def test_capabilities_of_each_type(cls: type[ChannelConfig]) -> None:
    endpoints, request_id, base_url, managed, stream_options, inline = CAPABILITIES[type_name(cls)]
    caps = cls.capabilities
    assert set(caps.endpoints) == endpoints
    assert caps.request_id_header is request_id
    assert caps.needs_base_url is base_url
    assert caps.managed_server == managed
    assert issubclass(cls, OpenAIWireConfig) is stream_options
    assert issubclass(cls, ImageInliningConfig) is inline


def test_only_azure_and_gemini_put_the_model_in_the_url_path() -> None:
    paths = {type_name(c): c(name="c").path_model("models/a b") for c in CHANNEL_CONFIGS}
    assert paths == {
        "openai": None, "openai-compatible": None, "local": None, "local-audio": None,
        "anthropic": None,
        "midjourney-proxy": None, "suno-api": None, "cohere": None,
        "azure": "models/a b",  # a deployment name, taken as it is
        "gemini": "a b",  # Gemini's adapter strips the resource prefix
    }  # fmt: skip


def test_which_types_serve_each_endpoint_spec() -> None:
    """By name or by speaking OpenAI's wire (minus what the type lacks): the matrix of
    docs/providers.md, "Endpoints by channel type"."""
    channels = [c(name="c") for c in CHANNEL_CONFIGS]
    served = {
        spec.name: sorted(c.type for c in channels if c.serves_endpoint(spec))
        for spec in default_specs()
    }
    assert served == {
        "chat": ["anthropic", "azure", "gemini", "local", "openai", "openai-compatible"],
        "completions": ["azure", "local", "openai", "openai-compatible"],
        "embeddings": ["azure", "gemini", "openai", "openai-compatible"],
        "moderations": ["openai", "openai-compatible"],
        "rerank": ["cohere", "openai-compatible"],
        "images": ["azure", "openai", "openai-compatible"],
        "image_edits": ["azure", "openai", "openai-compatible"],
        "image_variations": ["openai", "openai-compatible"],
        "speech": ["azure", "local-audio", "openai", "openai-compatible"],
        "transcriptions": ["azure", "local-audio", "openai", "openai-compatible"],
        "translations": ["azure", "local-audio", "openai", "openai-compatible"],
        # Passed through by these; every type serves /v1/responses translated to chat.
        "responses": ["azure", "openai"],
    }
