"""A fake Gemini API (``v1beta``) speaking the real wire format over a real loopback socket.

Every request is checked the way the real API would reject it: the key must arrive in the
``x-goog-api-key`` header and never in the URL, turns must alternate user/model, and each
request component must validate against the official ``google-genai`` SDK types (which forbid
unknown fields). A violation is answered with Gemini's own 400 ``INVALID_ARGUMENT`` and recorded
in ``violations``. Replies are steered by the request (tools, stop sequences, token limit) and
by words in the model name: ``safety`` (candidate stopped for SAFETY), ``blocked`` (prompt
blocked, no candidates), ``truncate`` (stream cut before its finishReason), ``thinking``
(reports thoughtsTokenCount). Models not named ``gemini-1*``/``gemini-2*`` behave like Gemini 3:
function calls carry ids, and replayed calls must keep their id and thought signature.
``script`` queues canned HTTP answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from google.genai import types
from pydantic import ValidationError

from tests.fakes.server import serve_on_loopback

__all__ = [
    "FakeGemini",
    "GeminiReceived",
    "GeminiScripted",
    "REPLY_WORDS",
    "SIGNATURE",
    "UPSTREAM_KEY",
    "check_generate_request",
    "error_body",
    "issues_ids",
]

UPSTREAM_KEY = "AIzaSyFAKE-gemini-key-do-not-leak-0123456"
REPLY_WORDS = ["Hello", " from", " Gemini", "!"]
PROMPT_TOKENS = 12
SIGNATURE = "c2lnbmF0dXJl"
_COMPONENTS: dict[str, Any] = {
    "systemInstruction": types.Content,
    "toolConfig": types.ToolConfig,
    "generationConfig": types.GenerationConfig,
}


@dataclass
class GeminiReceived:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class GeminiScripted:
    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    behaviour: str | None = None  # "malformed"


def error_body(code: int, status: str, message: str, details: list[Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return orjson.dumps({"error": error})


def _check_contents(contents: Any) -> None:
    if not isinstance(contents, list) or not contents:
        raise ValueError("* GenerateContentRequest.contents: contents is not specified")
    previous = None
    for content in contents:
        types.Content.model_validate(content)
        role = content.get("role")
        if role not in ("user", "model"):
            raise ValueError(f"Please use a valid role: user, model (got {role!r}).")
        if role == previous:
            raise ValueError("Please ensure that multiturn requests alternate user/model.")
        if not content.get("parts"):
            raise ValueError("contents.parts must not be empty.")
        previous = role


def issues_ids(model: str) -> bool:
    """Gemini 3 and later give every functionCall an id (and require it back)."""
    return not model.startswith(("gemini-1", "gemini-2"))


def _check_function_ids(contents: list[dict[str, Any]]) -> None:
    """Gemini 3's rules: replayed calls keep their signature; responses echo the call's id."""
    issued: set[str] = set()
    for content in contents:
        calls = [p for p in content["parts"] if "functionCall" in p]
        if calls and calls[0].get("thoughtSignature") != SIGNATURE:
            raise ValueError("Function call is missing a thought_signature in functionCall parts.")
        issued.update(p["functionCall"]["id"] for p in calls if "id" in p["functionCall"])
        for part in content["parts"]:
            answer = part.get("functionResponse")
            if answer is not None and issued and answer.get("id") not in issued:
                raise ValueError("functionResponse.id does not match functionCall.id")


def check_generate_request(body: dict[str, Any], model: str) -> None:
    """Raise ValueError/ValidationError where the real API would answer 400."""
    unknown = set(body) - {"contents", "tools", "toolConfig", "safetySettings",
                           "systemInstruction", "generationConfig", "cachedContent"}  # fmt: skip
    if unknown:
        raise ValueError(f"Invalid JSON payload received. Unknown name(s): {sorted(unknown)}")
    _check_contents(body.get("contents"))
    if issues_ids(model):
        _check_function_ids(body["contents"])
    for name, component in _COMPONENTS.items():
        if name in body:
            component.model_validate(body[name])
    thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
        raise ValueError("thinking_budget and thinking_level are not supported together")
    for tool in body.get("tools") or ():
        types.Tool.model_validate(tool)
        for declaration in tool.get("functionDeclarations") or ():
            text = orjson.dumps(declaration.get("parameters") or {})
            if b"additionalProperties" in text or b"$schema" in text or b"$ref" in text:
                raise ValueError("Invalid JSON payload: unknown schema field in parameters")
    for setting in body.get("safetySettings") or ():
        types.SafetySetting.model_validate(setting)


class FakeGemini:
    def __init__(self) -> None:
        self.received: list[GeminiReceived] = []
        self.violations: list[str] = []
        self.script: list[GeminiScripted] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeGemini:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1beta/models/{target}", self._dispatch)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _reject(
        self, message: str, code: int = 400, status: str = "INVALID_ARGUMENT"
    ) -> web.Response:
        self.violations.append(message)
        return web.Response(
            status=code, body=error_body(code, status, message), content_type="application/json"
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        self.received.append(
            GeminiReceived(request.path, dict(request.query), dict(request.headers), body)
        )
        if "key" in request.query:
            return self._reject("API key must not be sent in the URL")
        if request.headers.get("x-goog-api-key") != UPSTREAM_KEY:
            # What Gemini really answers for a wrong key: a 400 whose detail names the reason.
            detail = {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                      "reason": "API_KEY_INVALID", "domain": "googleapis.com"}  # fmt: skip
            message = "API key not valid. Please pass a valid API key."
            self.violations.append(message)
            body = error_body(400, "INVALID_ARGUMENT", message, [detail])
            return web.Response(status=400, body=body, content_type="application/json")
        if self.script:
            step = self.script.pop(0)
            if step.behaviour == "malformed":
                return web.Response(status=200, body=b"{not json", content_type="application/json")
            return web.Response(
                status=step.status, body=step.body or b"{}", headers=step.headers,
                content_type="application/json",
            )  # fmt: skip
        model, _, action = request.match_info["target"].partition(":")
        if action == "batchEmbedContents":
            return self._embed(model, body)
        try:
            check_generate_request(body, model)
        except (ValueError, ValidationError) as exc:
            return self._reject(f"Invalid request: {exc}")
        if action == "generateContent":
            reply = self._reply(model, body)
            return web.Response(body=orjson.dumps(reply), content_type="application/json")
        if action == "streamGenerateContent" and request.query.get("alt") == "sse":
            return await self._stream(request, model, body)
        return self._reject(f"unknown action {action}", 404, "NOT_FOUND")

    # --- replies ------------------------------------------------------------------------------

    def _plan(self, model: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """(parts of the reply, finishReason)."""
        config = body.get("generationConfig") or {}
        tools = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
        calling = ((body.get("toolConfig") or {}).get("functionCallingConfig")) or {}
        last_parts = body["contents"][-1]["parts"]
        answered = [p["functionResponse"] for p in last_parts if "functionResponse" in p]
        if "safety" in model:
            return [], "SAFETY"
        if answered:
            names = ",".join(
                f"{a['name']}={orjson.dumps(a['response']).decode()}" for a in answered
            )
            return [{"text": f"Tool said: {names}"}], "STOP"
        if tools and calling.get("mode", "AUTO") != "NONE":
            allowed = calling.get("allowedFunctionNames") or [tools[0]["name"]]
            call: dict[str, Any] = {"name": allowed[0], "args": {"city": "Paris"}}
            if issues_ids(model):
                call["id"] = f"gem-{len(self.received)}"
            return [{"functionCall": call, "thoughtSignature": SIGNATURE}], "STOP"
        words = list(REPLY_WORDS)
        if body.get("systemInstruction"):
            words = ["[sys]", *words]
        for stop in config.get("stopSequences") or ():
            for i, word in enumerate(words):
                if stop.strip() and stop.strip() in word:
                    words = words[:i]
                    break
        limit = config.get("maxOutputTokens")
        if isinstance(limit, int) and limit < len(words):
            return [{"text": w} for w in words[:limit]], "MAX_TOKENS"
        return [{"text": w} for w in words], "STOP"

    @staticmethod
    def _usage(model: str, completion: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": completion,
            "totalTokenCount": PROMPT_TOKENS + completion,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
        }
        if "thinking" in model:
            usage["thoughtsTokenCount"] = 5
            usage["totalTokenCount"] += 5
        return usage

    def _reply(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        if "blocked" in model:
            reply: dict[str, Any] = {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                "usageMetadata": self._usage(model, 0),
                "modelVersion": model,
                "responseId": "fake-blocked",
            }
            return _validated(reply)
        parts, finish = self._plan(model, body)
        count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
        candidate = {"content": {"role": "model", "parts": _merge_text(parts)}}
        candidates = [{**candidate, "finishReason": finish, "index": i} for i in range(count)]
        if not parts:
            candidates = [{"finishReason": finish, "index": i} for i in range(count)]
        reply = {
            "candidates": candidates,
            "usageMetadata": self._usage(model, len(parts) * count),
            "modelVersion": model,
            "responseId": "fake-response-id",
        }
        return _validated(reply)

    async def _stream(
        self, request: web.Request, model: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if "blocked" in model:
            await response.write(_event(self._reply(model, body)))
            return response
        parts, finish = self._plan(model, body)
        # Gemini repeats usageMetadata on every event with growing counts: never sum them.
        for i, part in enumerate(parts):
            event: dict[str, Any] = {
                "candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                "usageMetadata": self._usage(model, i + 1),
                "modelVersion": model,
                "responseId": "fake-stream",
            }
            last = i == len(parts) - 1
            if last and "truncate" in model:
                await response.write(_event(event))
                return response  # the connection ends without any finishReason
            if last:
                event["candidates"][0]["finishReason"] = finish
            await response.write(_event(event))
        if not parts:
            final = {
                "candidates": [{"finishReason": finish, "index": 0}],
                "usageMetadata": self._usage(model, 0),
            }
            await response.write(_event(final))
        return response

    def _embed(self, model: str, body: dict[str, Any]) -> web.Response:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return self._reject("requests must not be empty")
        embeddings = []
        for index, item in enumerate(requests):
            if item.get("model") != f"models/{model}":
                return self._reject(f"model mismatch: {item.get('model')} vs models/{model}")
            types.Content.model_validate(item.get("content"))
            size = int(item.get("outputDimensionality") or 4)
            embeddings.append({"values": [0.5 + index] + [0.25] * (size - 1)})
        reply = types.EmbedContentResponse.model_validate({"embeddings": embeddings})
        assert reply.embeddings is not None
        return web.Response(
            body=orjson.dumps({"embeddings": embeddings}), content_type="application/json"
        )


def _merge_text(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A whole response carries its text in one part, as Gemini does."""
    text = "".join(p["text"] for p in parts if "text" in p)
    others = [p for p in parts if "text" not in p]
    return ([{"text": text}] if text else []) + others


def _validated(reply: dict[str, Any]) -> dict[str, Any]:
    types.GenerateContentResponse.model_validate(reply)  # keeps the fake honest
    return reply


def _event(payload: dict[str, Any]) -> bytes:
    _validated(payload)
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"
