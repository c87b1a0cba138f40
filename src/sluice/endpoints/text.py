"""The text endpoints: chat completions, legacy completions, embeddings and moderations.

The Anthropic Messages route serves the chat spec through a dialect (``sluice.inbound``).
"""

from __future__ import annotations

from typing import Any

import orjson

from sluice.endpoints.spec import EndpointSpec, Estimate, EstimateInput
from sluice.protocol.validate import (
    validate_chat,
    validate_completions,
    validate_embeddings,
    validate_moderations,
)

__all__ = ["TEXT_SPECS", "text_of_response"]

DEFAULT_MODERATION_MODEL = "omni-moderation-latest"


def text_of_response(parsed: Any) -> str:
    """Generated text of an OpenAI chat/completions response, for local counting."""
    parts: list[str] = []
    if not isinstance(parsed, dict):
        return ""
    for choice in parsed.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                parts.append(message["content"])
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    parts.append(str(function.get("name", "")))
                    parts.append(str(function.get("arguments", "")))
        elif isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    return "".join(parts)


def _output_cap(given: EstimateInput) -> int:
    view = given.view
    return (view.max_tokens or given.default_max_tokens) * view.n


def _estimate_chat(given: EstimateInput) -> Estimate:
    body = given.body
    prompt = given.tokens.count_messages(body.get("messages") or [], body.get("tools"))
    return Estimate(prompt_tokens=prompt, completion_tokens=_output_cap(given))


def _estimate_completions(given: EstimateInput) -> Estimate:
    prompt = given.tokens.count_prompt(given.body.get("prompt"))
    return Estimate(prompt_tokens=prompt, completion_tokens=_output_cap(given))


def _estimate_input(given: EstimateInput) -> Estimate:
    return Estimate(prompt_tokens=given.tokens.count_prompt(given.body.get("input")))


def _with_counted_usage(body: bytes, prompt_tokens: int) -> bytes:
    """Upstreams such as Gemini report no embeddings usage: show the locally counted tokens
    that are billed, since OpenAI clients expect ``usage`` in every embeddings response."""
    parsed = orjson.loads(body)
    if not isinstance(parsed, dict) or isinstance(parsed.get("usage"), dict):
        return body
    parsed["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return orjson.dumps(parsed)


def _chat_probe(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}


def _default_moderation_model(body: dict[str, Any]) -> dict[str, Any] | None:
    if body.get("model"):
        return None
    return {**body, "model": DEFAULT_MODERATION_MODEL}


TEXT_SPECS = (
    EndpointSpec(
        name="chat",
        paths=("/v1/chat/completions", "/chat/completions"),
        upstream_path="/chat/completions",
        validate=validate_chat,
        estimate=_estimate_chat,
        delivered_text=text_of_response,
        probe_body=_chat_probe,
    ),
    EndpointSpec(
        name="completions",
        paths=("/v1/completions",),
        upstream_path="/completions",
        validate=validate_completions,
        estimate=_estimate_completions,
        delivered_text=text_of_response,
        stream_object="text_completion",
    ),
    EndpointSpec(
        name="embeddings",
        paths=("/v1/embeddings",),
        upstream_path="/embeddings",
        validate=validate_embeddings,
        estimate=_estimate_input,
        show_counted_usage=_with_counted_usage,
    ),
    EndpointSpec(
        name="moderations",
        paths=("/v1/moderations",),
        upstream_path="/moderations",
        validate=validate_moderations,
        estimate=_estimate_input,
        with_defaults=_default_moderation_model,
    ),
)
