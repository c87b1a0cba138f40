"""Edge validation of OpenAI request bodies.

The body stays a dict (it is forwarded with unknown fields intact); this module checks the
fields Sluice relies on or that OpenAI itself would reject, and reports the first problem as a
400 with ``param`` naming the field, in OpenAI's words where OpenAI has them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sluice.errors import InvalidRequest

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "RequestView",
    "json_object",
    "model_field",
    "optional_bool",
    "optional_int",
    "optional_number",
    "simple_view",
    "validate_chat",
    "validate_completions",
    "validate_embeddings",
    "validate_moderations",
]

MAX_OUTPUT_TOKENS = 1_000_000
_MAX_N = 128
_MAX_BEST_OF = 20  # OpenAI's bound for legacy completions
_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_MODEL_MAX_LEN = 256
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# No model name anywhere has these; refused for every channel because some providers put the
# name in the URL path (Gemini, Azure): "\\", "?", "#", "%" (an already encoded path), and "."
# or ".." as the whole name or as a "/"-separated segment. A "/" alone is fine here
# ("meta-llama/Llama-3-8B" on vLLM); adapters that put the name in a path refuse it themselves
# (providers/url_path.py). Regex searches: this runs on every request.
_PATH_UNSAFE_NAME = re.compile(r"[\\?#%]|(?:^|/)\.\.?(?:/|$)")


@dataclass(frozen=True, slots=True)
class RequestView:
    endpoint: str  # the endpoint spec's name
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None  # the larger of max_tokens and max_completion_tokens
    n: int  # choices generated: the larger of n and best_of


def _fail(message: str, param: str | None, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def optional_int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)}.",
            name,
            "invalid_type",
        )
    if not low <= value <= high:
        raise _fail(
            f"Invalid '{name}': {value} is out of range; expected a value between {low} and "
            f"{high}.",
            name,
        )
    return value


def optional_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(
            f"Invalid type for '{name}': expected a number, but got {_type_name(value)}.",
            name,
            "invalid_type",
        )
    if not low <= value <= high:
        raise _fail(
            f"Invalid '{name}': {value} is out of range; expected a value between {low} and "
            f"{high}.",
            name,
        )


def optional_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(
            f"Invalid type for '{name}': expected a boolean, but got {_type_name(value)}.",
            name,
            "invalid_type",
        )
    return value


def model_field(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise _fail("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str):
        raise _fail(
            f"Invalid type for 'model': expected a string, but got {_type_name(model)}.",
            "model",
            "invalid_type",
        )
    if not model.strip() or len(model) > _MODEL_MAX_LEN or _CONTROL_CHARS.search(model):
        raise _fail("Invalid 'model': must be a non-empty printable name.", "model")
    if _PATH_UNSAFE_NAME.search(model) is not None:
        raise _fail(
            "Invalid 'model': a model name cannot contain '\\', '?', '#' or '%', nor '.' "
            "or '..' as a path segment.",
            "model",
            "invalid_model_name",
        )
    return model


def _stream_fields(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = optional_bool(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise _fail(
            f"Invalid type for 'stream_options': expected an object, but got "
            f"{_type_name(options)}.",
            "stream_options",
            "invalid_type",
        )
    if not stream:
        raise _fail(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise _fail(
            "Invalid type for 'stream_options.include_usage': expected a boolean.",
            "stream_options.include_usage",
            "invalid_type",
        )
    return stream, bool(include)


def _validate_messages(messages: Any) -> None:
    if messages is None:
        raise _fail(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list):
        raise _fail(
            f"Invalid type for 'messages': expected an array, but got {_type_name(messages)}.",
            "messages",
            "invalid_type",
        )
    if not messages:
        raise _fail(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _fail(
                f"Invalid type for '{where}': expected an object, but got {_type_name(message)}.",
                where,
                "invalid_type",
            )
        role = message.get("role")
        if role not in _ROLES:
            raise _fail(
                f"Invalid value for '{where}.role': expected one of {', '.join(sorted(_ROLES))}.",
                f"{where}.role",
            )
        content = message.get("content")
        if content is None:
            if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
                continue
            if role == "assistant" and "content" in message:
                continue
            raise _fail(
                f"Missing required parameter: '{where}.content'.",
                f"{where}.content",
                "missing_required_parameter",
            )
        if isinstance(content, list):
            for part_index, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _fail(
                        f"Invalid '{where}.content[{part_index}]': each content part must be an "
                        "object with a 'type'.",
                        f"{where}.content[{part_index}]",
                    )
        elif not isinstance(content, str):
            raise _fail(
                f"Invalid type for '{where}.content': expected a string or an array of content "
                f"parts, but got {_type_name(content)}.",
                f"{where}.content",
                "invalid_type",
            )
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise _fail(
                f"Missing required parameter: '{where}.tool_call_id'.",
                f"{where}.tool_call_id",
                "missing_required_parameter",
            )


def _validate_sampling(body: dict[str, Any]) -> None:
    optional_number(body, "temperature", 0, 2)
    optional_number(body, "top_p", 0, 1)
    optional_number(body, "presence_penalty", -2, 2)
    optional_number(body, "frequency_penalty", -2, 2)
    optional_int(body, "top_logprobs", 0, 20)
    optional_int(body, "seed", -(2**63), 2**63 - 1)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _fail("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, (str, list)):
        raise _fail(
            "Invalid type for 'stop': expected a string or an array of strings.",
            "stop",
            "invalid_type",
        )


def _require_input(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        raise _fail(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    if isinstance(value, str):
        return
    if isinstance(value, list):
        if not value:
            raise _fail(f"Invalid '{name}': empty array.", name, "empty_array")
        if all(isinstance(item, (str, int)) and not isinstance(item, bool) for item in value):
            return
        if all(isinstance(item, list) for item in value):
            return
        if name == "input" and all(isinstance(item, dict) for item in value):
            return  # multi-modal moderation input
    raise _fail(
        f"Invalid type for '{name}': expected a string, an array of strings or an array of "
        "token arrays.",
        name,
        "invalid_type",
    )


def _output_bounds(body: dict[str, Any], best_of_cap: int) -> tuple[int | None, int]:
    """The most output tokens per choice and the most choices the upstream may generate.

    Both caps and both counts are taken at their larger value: upstreams differ in which of
    ``max_tokens``/``max_completion_tokens`` wins and whether ``best_of`` candidates are
    generated (and billed) beside ``n``, and a reservation must be an upper bound whatever the
    upstream does with them. ``best_of`` is forwarded on chat too (vLLM honours it there).
    """
    max_tokens = optional_int(body, "max_tokens", 1, MAX_OUTPUT_TOKENS)
    completion_cap = optional_int(body, "max_completion_tokens", 1, MAX_OUTPUT_TOKENS)
    if completion_cap is not None and (max_tokens is None or completion_cap > max_tokens):
        max_tokens = completion_cap
    n = optional_int(body, "n", 1, _MAX_N) or 1
    best_of = optional_int(body, "best_of", 1, best_of_cap) or 1
    return max_tokens, max(n, best_of)


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _fail("The request body must be a JSON object.", None, "invalid_json")
    return body


def _generation_view(endpoint: str, body: dict[str, Any], best_of_cap: int) -> RequestView:
    model = model_field(body)
    stream, include_usage = _stream_fields(body)
    max_tokens, n = _output_bounds(body, best_of_cap)
    _validate_sampling(body)
    return RequestView(endpoint, model, stream, include_usage, max_tokens, n)


def validate_chat(body: Any) -> RequestView:
    body = json_object(body)
    view = _generation_view("chat", body, _MAX_N)
    _validate_messages(body.get("messages"))
    optional_bool(body, "logprobs")
    optional_bool(body, "parallel_tool_calls")
    return view


def validate_completions(body: Any) -> RequestView:
    body = json_object(body)
    view = _generation_view("completions", body, _MAX_BEST_OF)
    _require_input(body, "prompt")
    optional_int(body, "logprobs", 0, 5)
    return view


def validate_embeddings(body: Any) -> RequestView:
    body = json_object(body)
    model = model_field(body)
    _require_input(body, "input")
    optional_int(body, "dimensions", 1, 65_536)
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _fail("Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format")
    return simple_view("embeddings", model)


def validate_moderations(body: Any) -> RequestView:
    body = json_object(body)
    model = model_field(body) if "model" in body else ""  # the spec fills in the default model
    _require_input(body, "input")
    return simple_view("moderations", model)


def simple_view(endpoint: str, model: str, stream: bool = False) -> RequestView:
    """The view of a request that generates no tokens (no output cap, one result)."""
    return RequestView(endpoint, model, stream, False, None, 1)
