"""OpenAI Responses API request -> an OpenAI chat completions body (pure, no I/O).

Channels that do not speak the Responses API (Anthropic, Gemini, OpenAI-compatible servers,
the local model) serve it through chat completions: this module validates a ``POST
/v1/responses`` body, in OpenAI's words and ``param`` paths, and builds the chat body the relay
runs. It also returns what the answer has to echo (``instructions``, ``tools``, ``text`` ...)
and this request's input items in their stored form (each with an id), for
``GET /v1/responses/{id}/input_items`` and for ``previous_response_id`` chains.

Only what every adapter understands is produced: string or text/image_url content, assistant
``tool_calls`` and ``tool`` messages, function tools. Built-in tools run by OpenAI's servers
(web search, file search, computer use, code interpreter, image generation, MCP, shells) have
no chat equivalent and are refused with a 400 ``unsupported_tool``; so are items and content
that would need OpenAI's own storage (file ids, item references, conversations).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sluice.errors import InvalidRequest

__all__ = [
    "ResponsesRequest",
    "to_chat_request",
    "native_input_items",
    "previous_response_id_of",
    "new_item_id",
    "BUILTIN_TOOL_TYPES",
]

# Tool types OpenAI runs on its own servers: a chat channel cannot execute them.
BUILTIN_TOOL_TYPES = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "web_search_2025_08_26",
        "file_search",
        "computer",
        "computer_use",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "tool_search",
    }
)
_CHOICE_MODES = ("none", "auto", "required")
_MESSAGE_ROLES = ("user", "assistant", "system", "developer")
# Request fields with the same name and meaning in chat completions.
_SAME_NAME = (
    "temperature",
    "top_p",
    "user",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
)
# Fields that need state or machinery only OpenAI has; refused rather than silently ignored.
_UNSUPPORTED_FIELDS = {
    "conversation": "Conversations are not available on this gateway; use "
    "'previous_response_id' to continue a stored response.",
    "prompt": "Prompt templates ('prompt') are stored by OpenAI and cannot be used through "
    "this gateway's translated channels.",
}
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A translated ``POST /v1/responses`` body."""

    chat: dict[str, Any]  # the chat completions body the relay runs
    # This request's input items as stored and listed (each with an id and status), after the
    # items of the previous response they continue.
    input_items: list[dict[str, Any]]
    echo: dict[str, Any]  # request fields every Response object repeats
    store: bool
    stream: bool


def new_item_id(kind: str) -> str:
    return f"{_ID_PREFIX.get(kind, 'item')}_{uuid.uuid4().hex}"


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


def _wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return _fail(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param,
        "invalid_type",
    )


def _missing(param: str) -> InvalidRequest:
    return _fail(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _optional(params: dict[str, Any], name: str, kinds: tuple[type, ...], expected: str) -> Any:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise _wrong_type(name, expected, value)
    if not isinstance(value, kinds):
        raise _wrong_type(name, expected, value)
    return value


def previous_response_id_of(params: Any) -> str | None:
    """The ``previous_response_id`` to load before translating (checked: a non-empty string)."""
    if not isinstance(params, dict):
        return None
    value = params.get("previous_response_id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong_type("previous_response_id", "a string", value)
    if not value:
        raise _fail(
            "Invalid 'previous_response_id': empty string.", "previous_response_id", "empty_string"
        )
    return value


def to_chat_request(params: Any, history: Sequence[dict[str, Any]] = ()) -> ResponsesRequest:
    """Translate a Responses body; ``history`` holds the stored input and output items of the
    response named by ``previous_response_id`` (they come before this request's input)."""
    if not isinstance(params, dict):
        raise _fail("Invalid request body: expected a JSON object.", None, "invalid_request_body")
    model = params.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    for name, message in _UNSUPPORTED_FIELDS.items():
        if params.get(name) is not None:
            raise _fail(message, name, "unsupported_parameter")
    if params.get("background") is True:
        raise _fail(
            "Background responses are not supported on this gateway; send the request without "
            "'background' (streaming is supported).",
            "background",
            "unsupported_parameter",
        )
    stream = bool(_optional(params, "stream", (bool,), "a boolean"))
    store_value = _optional(params, "store", (bool,), "a boolean")
    store = True if store_value is None else bool(store_value)
    instructions = _optional(params, "instructions", (str,), "a string")
    new_items = _input_items(params)
    tools, names = _tools(params.get("tools"))
    chat: dict[str, Any] = {"model": model}
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    _append_messages(messages, list(history), "previous_response_id", indexed=False)
    _append_messages(messages, new_items, "input", indexed=True)
    if not messages:
        raise _missing("input")
    chat["messages"] = messages
    choice = _tool_choice(params.get("tool_choice"), names)
    if tools:
        allowed = choice.allowed
        chat["tools"] = tools if allowed is None else [t for t in tools if _name(t) in allowed]
        if choice.chat is not None:
            chat["tool_choice"] = choice.chat
        parallel = _optional(params, "parallel_tool_calls", (bool,), "a boolean")
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    _number(params, "temperature", 2)
    _number(params, "top_p", 1)
    for name in _SAME_NAME:
        if params.get(name) is not None:
            chat[name] = params[name]
    max_output = _max_output_tokens(params)
    if max_output is not None:
        chat["max_completion_tokens"] = max_output
    _apply_text(params.get("text"), chat)
    _apply_reasoning(params.get("reasoning"), chat)
    metadata = _metadata(params.get("metadata"))
    if stream:
        chat["stream"] = True
        # The final response.completed event carries usage: always ask the upstream for it.
        chat["stream_options"] = {"include_usage": True}
    echo = _echo(params, instructions, names, metadata, choice.echo)
    stored = [*history, *(_as_stored_item(item) for item in new_items)]
    return ResponsesRequest(chat=chat, input_items=stored, echo=echo, store=store, stream=stream)


# --- input items -------------------------------------------------------------------------------


def _input_items(params: dict[str, Any]) -> list[dict[str, Any]]:
    value = params.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [_text_part(value)]}]
    if not isinstance(value, list):
        raise _wrong_type("input", "one of a string or array of input items", value)
    return [_checked_item(item, f"input[{index}]") for index, item in enumerate(value)]


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def _checked_item(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _wrong_type(param, "an object", item)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise _fail(
                f"Invalid value for '{param}.role': expected one of 'user', 'assistant', "
                "'system' or 'developer'.",
                f"{param}.role",
            )
        content = item.get("content")
        if content is None:
            raise _missing(f"{param}.content")
        if isinstance(content, str):
            part_type = "output_text" if role == "assistant" else "input_text"
            content = [{"type": part_type, "text": content}]
        elif not isinstance(content, list):
            raise _wrong_type(f"{param}.content", "a string or an array of content parts", content)
        return {"type": "message", "role": role, "content": content}
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise _missing(f"{param}.{name}")
        return item
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _missing(f"{param}.call_id")
        if not isinstance(item.get("output"), (str, list)):
            raise _wrong_type(f"{param}.output", "a string or an array", item.get("output"))
        return item
    if kind == "reasoning":
        return item  # kept for listing; a chat model is not shown another model's reasoning
    if kind == "item_reference":
        raise _fail(
            "Item references cannot be resolved on this gateway's translated channels; send "
            "the item itself, or use 'previous_response_id'.",
            param,
            "unsupported_item",
        )
    raise _fail(
        f"Invalid value for '{param}.type': the item type {kind!r} cannot be sent to this "
        "model (supported: message, function_call, function_call_output, reasoning).",
        f"{param}.type",
        "unsupported_item",
    )


def native_input_items(params: dict[str, Any]) -> list[dict[str, Any]]:
    """This request's input items as stored, for a request passed through untouched to an
    upstream that validates them itself: every item type is kept (built-in tool calls too)."""
    value = params.get("input")
    if isinstance(value, str):
        return [
            _as_stored_item({"type": "message", "role": "user", "content": [_text_part(value)]})
        ]
    if not isinstance(value, list):
        return []
    stored: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, dict):
            continue
        content = item.get("content")
        if item.get("type", "message") == "message" and isinstance(content, str):
            kind = "output_text" if item.get("role") == "assistant" else "input_text"
            item = {**item, "type": "message", "content": [{"type": kind, "text": content}]}
        stored.append(_as_stored_item(item))
    return stored


def _as_stored_item(item: dict[str, Any]) -> dict[str, Any]:
    """The item as ``input_items`` lists it: with an id and a status (OpenAI's resources)."""
    kind = item.get("type", "message")
    stored = dict(item)
    if not isinstance(stored.get("id"), str):
        stored["id"] = new_item_id(kind)
    if kind in ("message", "function_call", "function_call_output"):
        stored.setdefault("status", "completed")
    content = item.get("content")
    if kind == "message" and item.get("role") == "assistant" and isinstance(content, list):
        stored["content"] = [_as_output_part(part) for part in content]
    return stored


def _as_output_part(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") == "output_text":
        return {"annotations": [], "logprobs": [], **part}
    return part


def _append_messages(
    out: list[dict[str, Any]], items: list[dict[str, Any]], base: str, indexed: bool
) -> None:
    for index, item in enumerate(items):
        param = f"{base}[{index}]" if indexed else base
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, param))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            extra = item.get("extra_content")
            if isinstance(extra, dict):
                call["extra_content"] = extra  # e.g. Gemini's thought signature, as issued
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                # Parallel calls (and the text before them) are one assistant turn in chat.
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "content": _tool_output(item["output"], f"{param}.output"),
                }
            )
        # reasoning items: not shown to the chat model


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item["role"]
    converted = (
        _content_part(part, role, f"{param}.content[{index}]")
        for index, part in enumerate(item["content"])
    )
    parts = [part for part in converted if part is not None]
    chat_role = "system" if role == "developer" else role  # every adapter knows "system"
    if all(part["type"] == "text" for part in parts):
        return {"role": chat_role, "content": "\n\n".join(part["text"] for part in parts)}
    if role != "user":
        raise _fail(
            f"Invalid '{param}.content': images are only allowed in user messages.",
            f"{param}.content",
        )
    return {"role": "user", "content": parts}


def _content_part(part: Any, role: str, param: str) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise _wrong_type(param, "an object", part)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _missing(f"{param}.text")
        return {"type": "text", "text": text}
    if kind == "refusal":
        refusal = part.get("refusal")
        return {"type": "text", "text": refusal} if isinstance(refusal, str) else None
    if kind == "input_image":
        return _image_part(part, param)
    if kind == "input_file":
        raise _fail(
            "File inputs cannot be sent to this model through the gateway; send the file's "
            "text as input_text.",
            f"{param}.type",
            "unsupported_content",
        )
    raise _fail(
        f"Invalid value for '{param}.type': {kind!r} is not a supported content type for a "
        f"{role} message.",
        f"{param}.type",
    )


def _image_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = part.get("image_url")
    if part.get("file_id") is not None and url is None:
        raise _fail(
            "Images by 'file_id' need OpenAI's file storage; send 'image_url' (a URL or a data "
            "URL) instead.",
            f"{param}.file_id",
            "unsupported_content",
        )
    if not isinstance(url, str) or not url:
        raise _missing(f"{param}.image_url")
    image: dict[str, Any] = {"url": url}
    detail = part.get("detail")
    if detail in ("low", "high", "auto"):
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    texts: list[str] = []
    for index, part in enumerate(output):
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text"):
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
                continue
        raise _fail(
            "Only text can be returned as a function call output to this model.",
            f"{param}[{index}]",
            "unsupported_content",
        )
    return "\n\n".join(texts)


# --- tools -------------------------------------------------------------------------------------


def _name(tool: dict[str, Any]) -> str:
    name: str = tool["function"]["name"]
    return name


def _tools(value: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(chat tools, the function tools as a Response echoes them)."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise _wrong_type("tools", "an array", value)
    chat: list[dict[str, Any]] = []
    echoed: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _wrong_type(param, "an object", tool)
        kind = tool.get("type")
        if kind != "function":
            raise _unsupported_tool(kind, f"{param}.type")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _missing(f"{param}.name")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _wrong_type(f"{param}.parameters", "an object", parameters)
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _wrong_type(f"{param}.strict", "a boolean", strict)
        function: dict[str, Any] = {"name": name}
        description = tool.get("description")
        if isinstance(description, str):
            function["description"] = description
        function["parameters"] = (
            parameters if parameters is not None else {"type": "object", "properties": {}}
        )
        if strict is not None:
            function["strict"] = strict
        chat.append({"type": "function", "function": function})
        echo: dict[str, Any] = {
            "type": "function",
            "name": name,
            "parameters": parameters,
            "strict": strict,
        }
        if isinstance(description, str):
            echo["description"] = description
        echoed.append(echo)
    return chat, echoed


def _unsupported_tool(kind: Any, param: str) -> InvalidRequest:
    if isinstance(kind, str) and kind in BUILTIN_TOOL_TYPES:
        what = f"The built-in tool '{kind}' runs only on OpenAI's own servers"
    else:
        what = f"The tool type {kind!r} is not supported"
    return _fail(
        f"{what}: the channels serving this model through the gateway accept function tools only.",
        param,
        "unsupported_tool",
    )


@dataclass(frozen=True, slots=True)
class _Choice:
    chat: Any  # chat tool_choice, or None to leave it out
    echo: Any  # as the Response repeats it (the Responses shape)
    allowed: frozenset[str] | None = None  # allowed_tools: the only tools offered


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> _Choice:
    if value is None:
        return _Choice(None, "auto")
    if isinstance(value, str):
        if value not in _CHOICE_MODES:
            raise _fail(
                "Invalid value for 'tool_choice': expected one of 'none', 'auto' or 'required'.",
                "tool_choice",
            )
        return _Choice(value, value)
    if not isinstance(value, dict):
        raise _wrong_type("tool_choice", "a string or an object", value)
    kind = value.get("type")
    known = {tool["name"] for tool in tools}
    if kind == "function":
        # The Responses shape ({type, name}) and, leniently, chat's ({type, function: {name}}).
        nested = value.get("function")
        name = value.get("name") or (nested.get("name") if isinstance(nested, dict) else None)
        if not isinstance(name, str):
            raise _missing("tool_choice.name")
        if name not in known:
            raise _fail(
                f"Invalid value for 'tool_choice': the function '{name}' is not in 'tools'.",
                "tool_choice.name",
            )
        return _Choice(
            {"type": "function", "function": {"name": name}}, {"type": "function", "name": name}
        )
    if kind == "allowed_tools":
        mode = value.get("mode")
        if mode not in ("auto", "required"):
            raise _fail(
                "Invalid value for 'tool_choice.mode': expected 'auto' or 'required'.",
                "tool_choice.mode",
            )
        listed = value.get("tools")
        if not isinstance(listed, list):
            raise _missing("tool_choice.tools")
        names: set[str] = set()
        for index, entry in enumerate(listed):
            param = f"tool_choice.tools[{index}]"
            if not isinstance(entry, dict) or entry.get("type") != "function":
                raise _unsupported_tool(
                    entry.get("type") if isinstance(entry, dict) else entry, param
                )
            if not isinstance(entry.get("name"), str):
                raise _missing(f"{param}.name")
            names.add(entry["name"])
        echo = {"type": "allowed_tools", "mode": mode, "tools": listed}
        return _Choice(mode, echo, frozenset(names))
    raise _unsupported_tool(kind, "tool_choice.type")


# --- other fields ------------------------------------------------------------------------------


def _number(params: dict[str, Any], name: str, high: float) -> None:
    value = _optional(params, name, (int, float), "a number")
    if value is not None and not 0 <= value <= high:
        raise _fail(
            f"Invalid '{name}': {value} is out of range; expected a value between 0 and {high}.",
            name,
        )


def _max_output_tokens(params: dict[str, Any]) -> int | None:
    value = _optional(params, "max_output_tokens", (int,), "an integer")
    if value is not None and value < 16:
        raise _fail(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
            f"but got {value} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    max_output: int | None = value
    return max_output


def _apply_text(value: Any, chat: dict[str, Any]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong_type("text", "an object", value)
    verbosity = value.get("verbosity")
    if verbosity is not None:
        if verbosity not in ("low", "medium", "high"):
            raise _fail(
                "Invalid value for 'text.verbosity': expected 'low', 'medium' or 'high'.",
                "text.verbosity",
            )
        chat["verbosity"] = verbosity
    fmt = value.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise _wrong_type("text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        raise _fail(
            "Invalid value for 'text.format.type': expected 'text', 'json_schema' or "
            "'json_object'.",
            "text.format.type",
        )
    name, schema = fmt.get("name"), fmt.get("schema")
    if not isinstance(name, str) or not name:
        raise _missing("text.format.name")
    if not isinstance(schema, dict):
        raise _missing("text.format.schema")
    spec: dict[str, Any] = {"name": name, "schema": schema}
    if isinstance(fmt.get("description"), str):
        spec["description"] = fmt["description"]
    if isinstance(fmt.get("strict"), bool):
        spec["strict"] = fmt["strict"]
    chat["response_format"] = {"type": "json_schema", "json_schema": spec}


def _apply_reasoning(value: Any, chat: dict[str, Any]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong_type("reasoning", "an object", value)
    effort = value.get("effort")
    if effort is None:
        return
    if effort not in ("none", "minimal", "low", "medium", "high", "xhigh"):
        raise _fail(
            "Invalid value for 'reasoning.effort': expected one of 'none', 'minimal', 'low', "
            "'medium', 'high' or 'xhigh'.",
            "reasoning.effort",
        )
    chat["reasoning_effort"] = effort


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _wrong_type("metadata", "an object", value)
    if len(value) > 16:
        raise _fail("Invalid 'metadata': at most 16 keys are allowed.", "metadata")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise _fail(
                "Invalid 'metadata': keys are strings of up to 64 characters and values "
                "strings of up to 512 characters.",
                f"metadata.{key[:64]}",
            )
    return dict(value)


def _echo(
    params: dict[str, Any],
    instructions: str | None,
    tools: list[dict[str, Any]],
    metadata: dict[str, str],
    tool_choice: Any,
) -> dict[str, Any]:
    """The request fields a Response repeats (OpenAI's defaults where the client sent none)."""
    sent_text = params.get("text")
    text: dict[str, Any] = sent_text if isinstance(sent_text, dict) else {}
    reasoning = params.get("reasoning")
    parallel = params.get("parallel_tool_calls")
    echo: dict[str, Any] = {
        "instructions": instructions,
        "tools": tools,
        "tool_choice": tool_choice,
        "text": {"format": {"type": "text"}, **text},
        "temperature": params.get("temperature"),
        "top_p": params.get("top_p"),
        "parallel_tool_calls": True if parallel is None else parallel,
        "metadata": metadata,
        "max_output_tokens": params.get("max_output_tokens"),
        "previous_response_id": params.get("previous_response_id"),
        "reasoning": (
            {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
            if isinstance(reasoning, dict)
            else None
        ),
        "store": params.get("store", True) is not False,
        "truncation": "auto" if params.get("truncation") == "auto" else "disabled",
    }
    if isinstance(params.get("user"), str):
        echo["user"] = params["user"]
    return echo
