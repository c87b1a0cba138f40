"""The Responses API passed through to channels that serve it themselves (openai, azure).

``POST /v1/responses`` belongs to the Responses route (``inbound/responses_routes.py``), which
sends a request through this spec when every channel serving the model names it (the body
then goes upstream untouched, built-in tools included), and otherwise through the chat spec
with the Responses dialect (translated, on any channel type). So the spec has no route of its
own and is not forwarded by other OpenAI-wire channels (vLLM and llama.cpp servers mostly
lack ``/responses``): only channel types that list it serve it.
"""

from __future__ import annotations

from typing import Any

from sluice.endpoints.spec import EndpointSpec, Estimate, EstimateInput
from sluice.protocol.validate import (
    MAX_OUTPUT_TOKENS,
    RequestView,
    json_object,
    model_field,
    optional_bool,
    optional_int,
    optional_number,
)
from sluice.providers.openai_responses import output_text_of

__all__ = ["RESPONSES_SPEC", "validate_responses"]

# Fields of input items whose strings the model reads (text, tool output, call arguments).
_TEXT_FIELDS = ("text", "content", "output", "arguments", "refusal")


def validate_responses(body: Any) -> RequestView:
    """What the relay needs of a Responses body; OpenAI validates the rest itself."""
    body = json_object(body)
    model = model_field(body)
    stream = optional_bool(body, "stream")
    max_output = optional_int(body, "max_output_tokens", 16, MAX_OUTPUT_TOKENS)
    optional_number(body, "temperature", 0, 2)
    optional_number(body, "top_p", 0, 1)
    return RequestView("responses", model, stream, False, max_output, 1)


def _texts(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _texts(item, out)
    elif isinstance(value, dict):
        for name in _TEXT_FIELDS:
            if name in value:
                _texts(value[name], out)


def _estimate(given: EstimateInput) -> Estimate:
    body = given.body
    texts: list[str] = []
    _texts(body.get("instructions"), texts)
    _texts(body.get("input"), texts)
    count = given.tokens.count_text
    prompt = sum(count(text) for text in texts)
    tools = body.get("tools")
    if isinstance(tools, list):
        prompt += count(repr(tools))  # an upper bound of their schema's tokens
    output = given.view.max_tokens or given.default_max_tokens
    return Estimate(prompt_tokens=prompt, completion_tokens=output)


RESPONSES_SPEC = EndpointSpec(
    name="responses",
    paths=(),  # the Responses route chooses this spec or the translated chat path
    upstream_path="/responses",
    validate=validate_responses,
    estimate=_estimate,
    delivered_text=output_text_of,
    openai_wire=False,
)
