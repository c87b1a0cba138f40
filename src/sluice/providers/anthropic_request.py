"""OpenAI chat request -> Anthropic Messages request body (pure translation).

Rules (see docs/providers.md): system and developer messages are hoisted into the top-level
``system``; consecutive same-role turns merge (tool results first, as Anthropic requires);
``max_tokens`` is always sent because Anthropic requires it; JSON mode is a forced tool (see
``JSON_TOOL_NAME``); fields with no Anthropic meaning are dropped with a debug log, and
features that cannot be honoured (``n>1``, audio/file parts, legacy ``functions``) are a 400.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

from sluice.core import RelayCall
from sluice.errors import InvalidRequest

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "JSON_TOOL_NAME",
    "build_messages_body",
    "json_mode_forced",
]

log = logging.getLogger("sluice.providers.anthropic")

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires max_tokens; OpenAI clients usually omit it. 4096 is within every current
# Claude model's output limit and matches the reservation default.
DEFAULT_MAX_TOKENS = 4096
# JSON mode is implemented as a forced call of this tool: unlike a system instruction, the
# model is constrained to emit one JSON object (matching the schema when one is given), and it
# works on every Claude model that supports tools. Its input is returned as message content.
JSON_TOOL_NAME = "json_response"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
_EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
_MIN_THINKING_BUDGET = 1024
# Handled explicitly below (or meaningless for Anthropic and silently irrelevant).
_HANDLED = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "stop", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "reasoning_effort", "thinking", "user", "n",
}  # fmt: skip


def _bad(message: str, param: str | None, code: str = "unsupported_parameter") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def json_mode_forced(body: dict[str, Any]) -> bool:
    """Whether JSON mode is implemented with the forced ``JSON_TOOL_NAME`` tool."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("json_object", "json_schema"):
        return False
    # With client tools or extended thinking a forced tool is impossible: fall back to an
    # instruction in the system prompt.
    return not body.get("tools") and not _thinking_requested(body)


def _thinking_requested(body: dict[str, Any]) -> bool:
    if isinstance(body.get("thinking"), dict):
        return bool(body["thinking"].get("type") != "disabled")
    return bool(body.get("reasoning_effort") in _EFFORT_BUDGETS)


# --- content ---------------------------------------------------------------------------------


def _image_block(url: Any, where: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise _bad(f"Invalid '{where}': an image URL is required.", where, "invalid_value")
    if url.startswith(("http://", "https://")):
        # Normally inlined by sluice.providers.media before translation; if not, Anthropic can
        # fetch public URLs itself.
        return {"type": "image", "source": {"type": "url", "url": url}}
    if not url.startswith("data:"):
        raise _bad(f"Invalid '{where}': expected an http(s) or data URL.", where, "invalid_value")
    header, _, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64" or not data:
        raise _bad(f"Invalid '{where}': data URLs must be base64-encoded.", where, "invalid_value")
    if media_type not in _IMAGE_TYPES:
        raise _bad(
            f"Invalid '{where}': image type '{media_type}' is not supported by this model's "
            "provider; use JPEG, PNG, GIF or WebP.",
            where,
            "invalid_image_format",
        )
    if _BASE64.fullmatch(data) is None:
        raise _bad(f"Invalid '{where}': the base64 data is malformed.", where, "invalid_value")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _content_blocks(content: Any, where: str, *, images: bool = True) -> list[dict[str, Any]]:
    """OpenAI message content (string or parts) -> Anthropic blocks, empty text dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type")
        here = f"{where}[{index}]"
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url" and images:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append(_image_block(url, f"{here}.image_url.url"))
        else:
            raise _bad(
                f"Invalid '{here}': content parts of type '{kind}' are not supported by this "
                "model's provider (Anthropic).",
                here,
            )
    return blocks


def _tool_use_blocks(calls: Any, where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for index, call in enumerate(calls or ()):
        here = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(f"Invalid '{here}': a function name is required.", here, "invalid_value")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _bad(
                f"Invalid '{here}.function.arguments': must be a JSON object encoded as a string.",
                f"{here}.function.arguments",
                "invalid_value",
            )
        call_id = call.get("id") or f"call_{index}"
        blocks.append(
            {"type": "tool_use", "id": call_id, "name": function["name"], "input": parsed}
        )
    return blocks


def _tool_result_block(message: dict[str, Any], where: str) -> dict[str, Any]:
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = _content_blocks(content, f"{where}.content")
        if parts:
            block["content"] = parts
    return block


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})


def _convert_messages(messages: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        where = f"messages[{index}]"
        if role in ("system", "developer"):
            system.extend(_content_blocks(message.get("content"), f"{where}.content", images=False))
        elif role == "user":
            _append(turns, "user", _content_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            if message.get("function_call"):
                raise _bad("Legacy 'function_call' messages are not supported; use tools.", where)
            blocks = _content_blocks(message.get("content"), f"{where}.content", images=False)
            blocks.extend(_tool_use_blocks(message.get("tool_calls"), where))
            _append(turns, "assistant", blocks)
        elif role == "tool":
            _append(turns, "user", [_tool_result_block(message, where)])
        else:
            raise _bad(f"Invalid '{where}.role': '{role}' messages are not supported.", where)
    for turn in turns:
        if turn["role"] == "user":
            # Anthropic requires tool results to precede any other content in their turn.
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if turns and turns[-1]["role"] == "assistant":
        last = turns[-1]["content"][-1]
        if last["type"] == "text":
            last["text"] = last["text"].rstrip()  # a prefill may not end in whitespace
    if not turns:
        raise _bad(
            "At least one user or assistant message is required.", "messages", "invalid_value"
        )
    return system, turns


# --- tools and options -------------------------------------------------------------------------


def _tools(tools: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise _bad(
                f"Invalid 'tools[{index}]': only function tools are supported by this model's "
                "provider (Anthropic).",
                f"tools[{index}]",
            )
        entry: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None or choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        result = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise _bad("This form of 'tool_choice' is not supported by Anthropic.", "tool_choice")
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default is auto
    return result


def _json_instruction(fmt: dict[str, Any]) -> str:
    schema = (fmt.get("json_schema") or {}).get("schema")
    if isinstance(schema, dict):
        return (
            "Respond only with a JSON object that conforms to this JSON Schema, with no other "
            "text: " + orjson.dumps(schema).decode()
        )
    return "Respond only with a valid JSON object, with no other text."


def _apply_json_mode(body: dict[str, Any], out: dict[str, Any], system: list[Any]) -> None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return
    if not json_mode_forced(body):
        system.append({"type": "text", "text": _json_instruction(fmt)})
        return
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt["type"] == "json_schema" else None
    out["tools"] = [
        {
            "name": JSON_TOOL_NAME,
            "description": "Return the response as a JSON object.",
            "input_schema": schema if isinstance(schema, dict) else {"type": "object"},
        }
    ]
    out["tool_choice"] = {"type": "tool", "name": JSON_TOOL_NAME}


def _apply_thinking(body: dict[str, Any], out: dict[str, Any], native: Any = None) -> None:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        thinking = native  # from a client speaking the Anthropic API (inbound /v1/messages)
    if isinstance(thinking, dict):
        out["thinking"] = thinking  # Anthropic-style passthrough wins over reasoning_effort
    elif body.get("reasoning_effort") in _EFFORT_BUDGETS:
        max_tokens = out["max_tokens"]
        if max_tokens <= _MIN_THINKING_BUDGET:
            raise _bad(
                "'reasoning_effort' needs max_tokens above 1024 on Anthropic models "
                "(thinking tokens count toward max_tokens).",
                "max_tokens",
                "invalid_value",
            )
        budget = min(_EFFORT_BUDGETS[body["reasoning_effort"]], max_tokens - 1)
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if out.get("thinking", {}).get("type") in ("enabled", "adaptive"):
        # Extended thinking rejects modified temperature / top_k.
        for name in ("temperature", "top_k"):
            if out.pop(name, None) is not None:
                log.debug("anthropic: dropped %s (incompatible with thinking)", name)


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)):
        out["temperature"] = min(float(temperature), 1.0)  # OpenAI allows 0..2, Anthropic 0..1
    if isinstance(body.get("top_p"), (int, float)):
        out["top_p"] = body["top_p"]
    if isinstance(body.get("top_k"), int) and not isinstance(body["top_k"], bool):
        out["top_k"] = body["top_k"]
    stop = body.get("stop")
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    sequences = [s for s in sequences if isinstance(s, str) and s.strip()]
    if sequences:
        out["stop_sequences"] = sequences
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}


def build_messages_body(call: RelayCall) -> dict[str, Any]:
    """The Anthropic ``/v1/messages`` body for an OpenAI chat call; raises ``InvalidRequest``."""
    body = call.body
    if (body.get("n") or 1) != 1:
        raise _bad("'n' greater than 1 is not supported by this model's provider.", "n")
    if body.get("functions") or body.get("function_call"):
        raise _bad("Legacy 'functions' are not supported by Anthropic; use 'tools'.", "functions")
    system, turns = _convert_messages(body["messages"])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: dict[str, Any] = {"model": call.upstream_model, "max_tokens": max_tokens}
    _sampling(body, out)
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    _apply_json_mode(body, out, system)
    # Anthropic-native fields a client of ``/v1/messages`` sent (see ``RelayCall.extensions``).
    native = call.extensions.get("anthropic") if call.extensions else None
    _apply_thinking(body, out, native.get("thinking") if native else None)
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    out["messages"] = turns
    if call.stream:
        out["stream"] = True
    dropped = sorted(set(body) - _HANDLED)
    if dropped:
        log.debug("anthropic: dropped fields with no Anthropic equivalent: %s", dropped)
    return out
