"""OpenAI request -> Gemini ``generateContent`` / ``batchEmbedContents`` bodies (pure).

Gemini has two roles (``user``, ``model``), one system instruction, and strictly typed parts;
OpenAI's flexible message list is folded into that shape here. Anything the client sent that
Gemini cannot express is either dropped with a debug log (sampling extras) or refused with a
400 naming the field (content Sluice would otherwise silently lose).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from sluice.errors import InvalidRequest
from sluice.providers.gemini_response import is_synthetic_id
from sluice.providers.gemini_schema import clean_schema

__all__ = ["chat_body", "embed_body", "tool_name_by_call_id"]

log = logging.getLogger("sluice.providers.gemini")

# Fields of an OpenAI chat request that are either translated below or meaningless upstream.
_HANDLED = {
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "top_k",
    "max_tokens", "max_completion_tokens", "stop", "n", "seed", "presence_penalty",
    "frequency_penalty", "response_format", "tools", "tool_choice", "user",
    "parallel_tool_calls", "functions", "function_call", "reasoning_effort",
}  # fmt: skip
# OpenAI reasoning_effort -> Gemini thinking. Gemini 2.5 takes a token budget (the values Google's
# own OpenAI-compatible endpoint uses; 0 turns thinking off); Gemini 3 takes a level, and a
# request may not carry both.
_EFFORT_BUDGET = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
_EFFORT_LEVEL = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}
_SYSTEM_ROLES = {"system", "developer"}


def _fail(
    message: str, param: str | None, code: str = "unsupported_for_provider"
) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _text_of(content: Any, where: str) -> str:
    """System/assistant content: a string or a list of text (or refusal) parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for index, part in enumerate(content if isinstance(content, list) else ()):
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        elif isinstance(part, dict) and isinstance(part.get("refusal"), str):
            pieces.append(part["refusal"])
        else:
            raise _fail(f"Only text content is supported in '{where}'.", f"{where}[{index}]")
    return "".join(pieces)


def _data_url_part(url: str, where: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        raise _fail(
            "Images must be given as http(s) URLs or base64 data URLs "
            "('data:image/png;base64,...').",
            where,
        )
    header, _, data = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    if encoding != "base64" or not mime or not data:
        raise _fail("Invalid image data URL: expected 'data:<mime>;base64,<data>'.", where)
    return {"inlineData": {"mimeType": mime, "data": data}}


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content if isinstance(content, list) else ()):
        here = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _fail("Missing image URL.", f"{here}.image_url.url")
            parts.append(_data_url_part(url, f"{here}.image_url.url"))
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            audio = part["input_audio"]
            mime = f"audio/{audio.get('format', 'wav')}"
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
        else:
            raise _fail(f"Unsupported content part type '{kind}' for this model.", here)
    return parts


def _function_call_part(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _fail("A tool call needs a function name.", f"{where}.function.name")
    raw = function.get("arguments") or "{}"
    try:
        args = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise _fail(
            "Tool call arguments must be a JSON object.", f"{where}.function", "invalid_value"
        ) from None
    if not isinstance(args, dict):
        raise _fail(
            "Tool call arguments must be a JSON object.", f"{where}.function", "invalid_value"
        )
    part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": args}}
    call_id = call.get("id")
    if isinstance(call_id, str) and call_id and not is_synthetic_id(call_id):
        # Gemini 3 issues ids and requires them back, on the call and on its response.
        part["functionCall"]["id"] = call_id
    # Gemini 3 rejects a replayed function call without the signature it issued; Sluice hands
    # it out the way Google's own OpenAI endpoint does (tool_calls[].extra_content.google).
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if isinstance(signature, str) and signature:
        part["thoughtSignature"] = signature
    return part


def _function_response(name: str, content: Any, where: str, call_id: Any = None) -> dict[str, Any]:
    text = content if isinstance(content, str) else _text_of(content, where)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    # Gemini's response field is a JSON object; wrap anything else under "output".
    response = value if isinstance(value, dict) else {"output": value}
    out: dict[str, Any] = {"name": name, "response": response}
    if isinstance(call_id, str) and call_id and not is_synthetic_id(call_id):
        out["id"] = call_id
    return {"functionResponse": out}


def tool_name_by_call_id(messages: list[Any]) -> dict[str, str]:
    """tool_call_id -> function name, from every assistant message's tool_calls."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or () if isinstance(message, dict) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(call.get("id"), str) and isinstance(function, dict):
                names[call["id"]] = str(function.get("name", ""))
    return names


def _content_of(
    message: dict[str, Any], where: str, names: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "user":
        return "user", _user_parts(message.get("content"), f"{where}.content")
    if role == "assistant":
        parts: list[dict[str, Any]] = []
        text = _text_of(message.get("content"), f"{where}.content")
        if text:
            parts.append({"text": text})
        for index, call in enumerate(message.get("tool_calls") or ()):
            parts.append(_function_call_part(call, f"{where}.tool_calls[{index}]"))
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            parts.append(_function_call_part({"function": legacy}, f"{where}.function_call"))
        return "model", parts
    if role == "tool":
        call_id = message.get("tool_call_id")
        name = names.get(call_id) if isinstance(call_id, str) else None
        if not name:
            raise _fail(
                f"The tool message's tool_call_id '{call_id}' does not match any tool call of "
                "an earlier assistant message; Gemini needs the function's name.",
                f"{where}.tool_call_id",
                "invalid_value",
            )
        content = message.get("content")
        return "user", [_function_response(name, content, f"{where}.content", call_id)]
    # legacy "function" role: the name is on the message itself
    name = str(message.get("name", ""))
    return "user", [_function_response(name, message.get("content"), f"{where}.content")]


def _contents(messages: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    names = tool_name_by_call_id(messages)
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.get("role") in _SYSTEM_ROLES:
            # Gemini has one system instruction: every system/developer message joins it.
            system.append({"text": _text_of(message.get("content"), f"{where}.content")})
            continue
        role, parts = _content_of(message, where, names)
        if not parts:
            continue  # an empty assistant turn: Gemini rejects contents without parts
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)  # Gemini wants alternating turns
        else:
            contents.append({"role": role, "parts": parts})
    instruction = {"parts": system} if system else None
    return contents, instruction


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    declarations: list[dict[str, Any]] = []
    tools = body.get("tools")
    functions = [t.get("function") for t in tools or () if isinstance(t, dict)]
    functions += [f for f in body.get("functions") or () if isinstance(f, dict)]
    for index, function in enumerate(functions):
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _fail("Each tool needs a function with a name.", f"tools[{index}].function")
        declaration: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        if isinstance(parameters, dict) and parameters.get("properties"):
            # Gemini rejects an OBJECT schema with no properties; a no-argument tool omits it.
            declaration["parameters"] = clean_schema(parameters)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else None


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        config: dict[str, Any] = {"mode": "AUTO"}
    elif choice == "none":
        config = {"mode": "NONE"}
    elif choice == "required":
        config = {"mode": "ANY"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        config = {"mode": "ANY", "allowedFunctionNames": [str(choice["function"].get("name"))]}
    elif isinstance(choice, dict) and isinstance(choice.get("name"), str):  # legacy function_call
        config = {"mode": "ANY", "allowedFunctionNames": [choice["name"]]}
    else:
        raise _fail("Unsupported tool_choice value.", "tool_choice")
    return {"functionCallingConfig": config}


_SAMPLING = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


def thinking_config(model: str, effort: object) -> dict[str, Any] | None:
    """``generationConfig.thinkingConfig`` for an OpenAI ``reasoning_effort`` (None: leave the
    model's default)."""
    if not isinstance(effort, str) or effort not in _EFFORT_BUDGET:
        return None
    name = model.rsplit("/", 1)[-1]
    if name.startswith("gemini-3"):
        if effort == "none":
            return None  # Gemini 3 cannot turn thinking off; its lowest level is "low"
        return {"thinkingLevel": _EFFORT_LEVEL[effort]}
    return {"thinkingBudget": _EFFORT_BUDGET[effort]}


def _generation_config(body: dict[str, Any], model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in _SAMPLING.items():
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("n") is not None and body["n"] != 1:
        config["candidateCount"] = body["n"]
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["responseSchema"] = clean_schema(schema)
    thinking = thinking_config(model, body.get("reasoning_effort"))
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config


def chat_body(
    body: dict[str, Any], safety_settings: list[dict[str, Any]], model: str = ""
) -> dict[str, Any]:
    """The ``generateContent`` request for an OpenAI chat completion request to ``model``."""
    dropped = sorted(set(body) - _HANDLED)
    if dropped:
        log.debug("gemini: dropping fields it cannot express: %s", ", ".join(dropped))
    contents, instruction = _contents(body.get("messages") or [])
    if not contents:
        raise _fail("At least one user or assistant message is required.", "messages")
    out: dict[str, Any] = {"contents": contents}
    if instruction is not None:
        out["systemInstruction"] = instruction
    tools = _tools(body)
    if tools is not None:
        out["tools"] = tools
        choice = body.get("tool_choice", body.get("function_call"))
        tool_config = _tool_config(choice)
        if tool_config is not None:
            out["toolConfig"] = tool_config
    config = _generation_config(body, model)
    if config:
        out["generationConfig"] = config
    if safety_settings:
        out["safetySettings"] = safety_settings
    return out


def embed_body(body: dict[str, Any], model_resource: str) -> dict[str, Any]:
    """The ``batchEmbedContents`` request: one sub-request per input string."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
        raise _fail(
            "This model accepts only strings as embeddings input, not token arrays.", "input"
        )
    dimensions = body.get("dimensions")
    requests: list[dict[str, Any]] = []
    for text in inputs:
        item: dict[str, Any] = {"model": model_resource, "content": {"parts": [{"text": text}]}}
        if isinstance(dimensions, int):
            item["outputDimensionality"] = dimensions
        requests.append(item)
    return {"requests": requests}
