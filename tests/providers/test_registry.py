"""The provider registry: every config type of the config file has its adapter, and a channel
parsed from the file gets the adapter that reads its type's fields."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.core import RelayCall
from sluice.providers.configs import CHANNEL_CONFIGS, Capabilities, ChannelConfig, type_name
from sluice.providers.registry import PROVIDERS, adapter_for, supported_types
from sluice.settings import parse_settings


def test_every_config_type_has_exactly_one_provider() -> None:
    assert supported_types() == sorted(type_name(c) for c in CHANNEL_CONFIGS)
    for name, provider in PROVIDERS.items():
        assert provider.type == name == type_name(provider.config)
        assert provider.config in CHANNEL_CONFIGS


class _PigeonConfig(ChannelConfig, frozen=True, tag="carrier-pigeon"):
    capabilities = Capabilities(endpoints=frozenset({"chat"}))


def test_unknown_type_has_no_adapter() -> None:
    assert adapter_for(_PigeonConfig(name="pigeon")) is None


def _call(
    model: str, body: dict[str, Any], endpoint: str = "chat", path: str = "/chat/completions"
) -> RelayCall:
    return RelayCall(
        endpoint=endpoint, path=path, body=body, raw_body=orjson.dumps(body),
        requested_model=model, upstream_model=model, stream=False, client_wants_usage=False,
    )  # fmt: skip


HELLO = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
# The request each type's test sends, when not a chat completion: an audio-only type gets
# the speech request its server answers.
CALLS = {
    "cohere": _call("m", {"model": "m", "query": "q", "documents": ["d"]}, "rerank", "/rerank"),
    "local-audio": _call(
        "m", {"model": "m", "input": "hi", "voice": "alloy"}, "speech", "/audio/speech"
    ),
}


# A channel of each type, as the config file has it, with a field of its own that shows in the
# request its adapter builds.
CHANNELS: dict[str, tuple[dict[str, Any], str]] = {
    "openai": ({"base_url": "http://o/v1"}, "http://o/v1/chat/completions"),
    "openai-compatible": ({"base_url": "http://c/v1"}, "http://c/v1/chat/completions"),
    "local": ({"context_size": 512}, "/chat/completions"),  # base_url: its server's, at start
    "local-audio": ({"threads": 2}, "/audio/speech"),  # base_url: its server's, at start
    "azure": (
        {"base_url": "http://a", "api_version": "2099-01-01"},
        "http://a/openai/deployments/m/chat/completions?api-version=2099-01-01",
    ),
    "anthropic": ({"base_url": "http://an", "allow_private_image_urls": True}, "http://an/v1/messages"),
    "gemini": (
        {"base_url": "http://g", "safety_settings": [{"category": "C", "threshold": "T"}]},
        "http://g/v1beta/models/m:generateContent",
    ),
    "cohere": ({"base_url": "http://co/v2"}, "http://co/v2/rerank"),  # rerank only
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(CHANNELS))
def test_a_parsed_channel_gets_the_adapter_of_its_type(kind: str) -> None:
    fields, url = CHANNELS[kind]
    config = parse_settings({"channels": [{"name": "c", "type": kind, **fields}]}).channels[0]
    assert type(config) is PROVIDERS[kind].config
    adapter = adapter_for(config)
    assert adapter is not None and adapter.name == kind
    call = CALLS.get(kind) or _call("m", HELLO)
    request = adapter.build_request(call, config)
    assert request.url == url
    if kind == "gemini":
        assert orjson.loads(request.body)["safetySettings"] == [{"category": "C", "threshold": "T"}]


def test_only_the_openai_type_applies_openai_reasoning_model_rules() -> None:
    body = {"model": "o3", "max_tokens": 9, "messages": [{"role": "system", "content": "s"}]}
    sent = {}
    for kind in ("openai", "openai-compatible", "local"):
        config = parse_settings({"channels": [{"name": "c", "type": kind}]}).channels[0]
        adapter = adapter_for(config)
        assert adapter is not None
        sent[kind] = orjson.loads(adapter.build_request(_call("o3", body), config).body)
    assert sent["openai"]["max_completion_tokens"] == 9 and "max_tokens" not in sent["openai"]
    assert sent["openai"]["messages"][0]["role"] == "developer"
    assert sent["openai-compatible"] == sent["local"] == body
