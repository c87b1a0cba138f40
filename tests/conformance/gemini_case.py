"""The gemini entry of the conformance suite: channels, errors and a Canon reading of requests.

Kept out of ``cases.py`` so that module stays small; ``cases.py`` builds the ``ProviderCase``
from these functions. The fake issues function-call ids (it behaves like Gemini 3 for the
upstream model names used here), so tool-call ids survive the round trip like on OpenAI.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.fakes.gemini_upstream import UPSTREAM_KEY, FakeGemini, GeminiScripted, error_body

__all__ = [
    "canon_gemini",
    "gemini_channels",
    "gemini_error",
    "gemini_malformed",
    "gemini_reset",
    "start_gemini",
    "GEMINI_REPLY",
]

GEMINI_REPLY = "Hello from Gemini!"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


async def start_gemini() -> FakeGemini:
    return await FakeGemini().start()


def gemini_channels(model: str, private_model: str, truncate_model: str) -> Any:
    def channels(fake: Any) -> list[dict[str, Any]]:
        base = {"type": "gemini", "base_url": fake.base_url, "api_key": UPSTREAM_KEY}
        return [
            {**base, "name": "main", "model_map": {model: "gemini-test"}},
            {
                **base,
                "name": "private",
                "model_map": {private_model: "gemini-test-vision"},
                "allow_private_image_urls": True,
            },
            # the fake cuts the stream short for models named "...truncate..."
            {**base, "name": "truncating", "model_map": {truncate_model: "gemini-test-truncate"}},
        ]

    return channels


def gemini_error(fake: Any, status: int, message: str, headers: dict[str, str]) -> None:
    body = error_body(status, _STATUS_NAMES.get(status, "UNKNOWN"), message)
    fake.script.append(GeminiScripted(status=status, body=body, headers=headers))


def gemini_malformed(fake: Any) -> None:
    fake.script.append(GeminiScripted(behaviour="malformed"))


def gemini_reset(fake: Any) -> None:
    fake.received.clear()
    fake.script.clear()
    fake.violations.clear()


def _tool_choice(body: dict[str, Any]) -> Any:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if not isinstance(config, dict):
        return None
    mode = str(config.get("mode"))
    if mode == "ANY":
        names = config.get("allowedFunctionNames") or []
        return ("tool", names[0]) if len(names) == 1 else "required"
    return {"AUTO": "auto", "NONE": "none"}.get(mode)


def _result_text(response: Any) -> str:
    if isinstance(response, dict) and set(response) == {"output"}:
        output = response["output"]
        return output if isinstance(output, str) else orjson.dumps(output).decode()
    return orjson.dumps(response).decode()


def _read_part(canon: Any, role: str, part: dict[str, Any]) -> None:
    if "text" in part:
        canon.texts.append((role, part["text"]))
    elif "inlineData" in part:
        canon.images.append(("data", part["inlineData"]["mimeType"], part["inlineData"]["data"]))
    elif "fileData" in part:
        canon.images.append(("url", part["fileData"]["fileUri"]))
    elif "functionCall" in part:
        call = part["functionCall"]
        canon.tool_calls.append((call.get("id", ""), call["name"], call.get("args") or {}))
    elif "functionResponse" in part:
        answer = part["functionResponse"]
        canon.tool_results.append((answer.get("id", ""), _result_text(answer.get("response"))))


def canon_gemini(received: Any) -> Any:
    from tests.conformance.cases import Canon  # at call time: cases.py imports this module

    body = received.body
    config = body.get("generationConfig") or {}
    canon = Canon(
        stream=received.path.endswith(":streamGenerateContent"),
        max_tokens=config.get("maxOutputTokens"),
        stop=list(config.get("stopSequences") or ()),
    )
    instruction = body.get("systemInstruction") or {}
    canon.system = "\n".join(p.get("text", "") for p in instruction.get("parts") or ())
    for content in body["contents"]:
        role = "assistant" if content["role"] == "model" else "user"
        canon.add_turn(role)
        for part in content["parts"]:
            _read_part(canon, role, part)
    canon.tools = [
        d["name"] for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()
    ]
    canon.tool_choice = _tool_choice(body)
    return canon
