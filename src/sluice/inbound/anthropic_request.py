"""Anthropic Messages request parameters -> an OpenAI chat completions body (pure, no I/O).

The result goes through the normal relay (admission, routing, any channel type), so it uses only
what every adapter understands: string system prompt, text/image_url parts, assistant
``tool_calls`` and ``tool`` messages. Anthropic-only fields with no OpenAI meaning (``top_k``,
``thinking``, ``cache_control``, ``service_tier`` ...) are dropped with a debug log; ``thinking``
still reaches Anthropic channels, beside the body (``RelayCall.extensions["anthropic"]``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from sluice.errors import InvalidRequest

__all__ = ["to_openai_chat"]

log = logging.getLogger("sluice.inbound")

# Anthropic fields with a direct OpenAI equivalent of the same name and meaning.
_SAME_NAME = ("temperature", "top_p")
# Fields handled explicitly below; everything else is dropped.
_HANDLED = {
    "model",
    "messages",
    "system",
    "max_tokens",
    "stream",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
    *_SAME_NAME,
}
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
# Blocks that carry no meaning for a non-Anthropic model (signed reasoning, server tool output).
_SKIPPED_BLOCKS = {"thinking", "redacted_thinking"}


def _fail(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_request")


def to_openai_chat(params: Any) -> dict[str, Any]:
    """Translate a Messages API body; raises ``InvalidRequest`` for what Anthropic would reject."""
    if not isinstance(params, dict):
        raise _fail("The request body must be a JSON object.")
    for name in ("model", "messages", "max_tokens"):
        if name not in params:
            raise _fail(f"{name}: Field required", name)
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _fail("max_tokens: Input should be a valid integer", "max_tokens")
    body: dict[str, Any] = {
        "model": params["model"],
        "messages": _messages(params.get("system"), params["messages"]),
        "max_tokens": max_tokens,
    }
    for name in _SAME_NAME:
        if params.get(name) is not None:
            body[name] = params[name]
    stops = params.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _fail("stop_sequences: Input should be a list of strings", "stop_sequences")
        if stops:
            body["stop"] = stops
    _apply_tools(params, body)
    user = _user_id(params.get("metadata"))
    if user is not None:
        body["user"] = user
    stream = params.get("stream")
    if stream is not None:
        body["stream"] = stream
        if stream is True:
            # message_delta carries usage, so always ask for it (also what billing needs).
            body["stream_options"] = {"include_usage": True}
    dropped = sorted(set(params) - _HANDLED)
    if dropped:
        log.debug("anthropic inbound: dropping fields without an OpenAI equivalent: %s", dropped)
    return body


def _user_id(metadata: Any) -> str | None:
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        user_id: str = metadata["user_id"]
        return user_id
    return None


# --- messages ----------------------------------------------------------------------------------


def _text_of_blocks(blocks: list[Any], param: str) -> str:
    texts: list[str] = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _fail(f"{param}.{index}: only text blocks are allowed here", param)
        text = block.get("text")
        if not isinstance(text, str):
            raise _fail(f"{param}.{index}.text: Input should be a valid string", param)
        texts.append(text)
    return "\n\n".join(texts)


def _system_text(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return _text_of_blocks(system, "system")
    raise _fail("system: Input should be a valid string or a list of text blocks", "system")


def _messages(system: Any, messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise _fail("messages: Input should be a valid list", "messages")
    out: list[dict[str, Any]] = []
    system_text = _system_text(system)
    if system_text:
        out.append({"role": "system", "content": system_text})
    for index, message in enumerate(messages):
        param = f"messages.{index}"
        if not isinstance(message, dict):
            raise _fail(f"{param}: Input should be a valid object", param)
        role = message.get("role")
        content = message.get("content")
        if content is None:
            raise _fail(f"{param}.content: Field required", param)
        if role == "user":
            out.extend(_user_messages(content, param))
        elif role == "assistant":
            out.append(_assistant_message(content, param))
        elif role == "system":
            text = content if isinstance(content, str) else _text_of_blocks(content, param)
            out.append({"role": "system", "content": text})
        else:
            raise _fail(f"{param}.role: Input should be 'user' or 'assistant'", param)
    return out


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict):
        kind = source.get("type")
        if kind == "base64" and isinstance(source.get("data"), str):
            media = source.get("media_type") or "image/png"
            url = f"data:{media};base64,{source['data']}"
            return {"type": "image_url", "image_url": {"url": url}}
        if kind == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _fail(f"{param}.source: expected a base64 or url image source", param)


def _document_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        data = source.get("data")
        if isinstance(data, str):
            return {"type": "text", "text": data}
    raise _fail(f"{param}: only plain-text documents can be relayed to this model", param)


def _content_part(block: Any, param: str) -> dict[str, Any] | None:
    """One user-side content block as an OpenAI part; None for blocks to skip."""
    if not isinstance(block, dict):
        raise _fail(f"{param}: Input should be a valid object", param)
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _fail(f"{param}.text: Input should be a valid string", param)
        return {"type": "text", "text": block["text"]}
    if kind == "image":
        return _image_part(block, param)
    if kind == "document":
        return _document_part(block, param)
    if kind in _SKIPPED_BLOCKS:
        return None
    raise _fail(f"{param}.type: the content block type {kind!r} is not supported here", param)


def _user_messages(content: Any, param: str) -> list[dict[str, Any]]:
    """A user turn: tool results become ``tool`` messages (first, as OpenAI requires them right
    after the assistant's calls), the remaining parts one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise _fail(f"{param}.content: Input should be a string or a list of blocks", param)
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        block_param = f"{param}.content.{index}"
        if isinstance(block, dict) and block.get("type") == "tool_result":
            message, images = _tool_result(block, block_param)
            tool_messages.append(message)
            parts.extend(images)
            continue
        part = _content_part(block, block_param)
        if part is not None:
            parts.append(part)
    out = tool_messages
    if parts:
        if all(part["type"] == "text" for part in parts):
            out.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result(block: dict[str, Any], param: str) -> tuple[dict[str, Any], list[Any]]:
    """(the ``tool`` message, image parts to show in a following user message). OpenAI tool
    messages carry text only, so images a tool returned travel in the next user message."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str):
        raise _fail(f"{param}.tool_use_id: Field required", param)
    content = block.get("content")
    images: list[Any] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts: list[str] = []
        for index, item in enumerate(content):
            part = _content_part(item, f"{param}.content.{index}")
            if part is None:
                continue
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(part)
        text = "\n\n".join(texts)
    else:
        raise _fail(f"{param}.content: Input should be a string or a list of blocks", param)
    if block.get("is_error") is True:
        # OpenAI has no error flag on tool output; say it in words the model will read.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _assistant_message(content: Any, param: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise _fail(f"{param}.content: Input should be a string or a list of blocks", param)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        block_param = f"{param}.content.{index}"
        if not isinstance(block, dict):
            raise _fail(f"{block_param}: Input should be a valid object", block_param)
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(_tool_call(block, block_param))
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise _fail(f"{block_param}.type: {kind!r} is not supported in assistant turns")
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool_call(block: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise _fail(f"{param}: tool_use blocks need a string id and name", param)
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- tools -------------------------------------------------------------------------------------


def _apply_tools(params: dict[str, Any], body: dict[str, Any]) -> None:
    tools = params.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _fail("tools: Input should be a valid list", "tools")
        if tools:
            body["tools"] = [_tool(tool, f"tools.{i}") for i, tool in enumerate(tools)]
    choice = params.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _fail("tool_choice: Input should be an object with a type", "tool_choice")
    kind = choice["type"]
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise _fail("tool_choice.name: Field required", "tool_choice")
        body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif kind in _TOOL_CHOICE:
        body["tool_choice"] = _TOOL_CHOICE[kind]
    else:
        raise _fail(f"tool_choice.type: unknown tool choice {kind!r}", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and "tools" in body and kind != "none":
        body["parallel_tool_calls"] = False


def _tool(tool: Any, param: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise _fail(f"{param}: Input should be a valid object", param)
    kind = tool.get("type")
    schema = tool.get("input_schema")
    if kind not in (None, "custom") or not isinstance(schema, dict):
        # Anthropic-defined tools (bash_*, web_search_* ...) have no schema another model knows.
        raise _fail(
            f"{param}: only custom tools with an input_schema can be relayed to this model "
            f"(got type {kind!r})",
            param,
        )
    name = tool.get("name")
    if not isinstance(name, str):
        raise _fail(f"{param}.name: Field required", param)
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}
