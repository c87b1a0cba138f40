"""Gemini ``GenerateContentResponse`` / ``batchEmbedContents`` -> OpenAI shapes (pure).

Shared by the whole-response path (``gemini.py``) and the stream translator
(``gemini_stream.py``): usage, finish reasons and function calls are read the same way in both.
"""

from __future__ import annotations

import base64
import re
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.core import UpstreamFailure, UsageTokens
from sluice.errors import UpstreamBadResponse
from sluice.providers.failures import classify

__all__ = [
    "CandidateParts",
    "blocked_reason",
    "chat_completion",
    "embedding_list",
    "failure_from_error",
    "finish_reason",
    "is_synthetic_id",
    "new_call_id",
    "openai_usage",
    "split_parts",
    "usage_from_gemini",
]

# Every way Gemini stops a candidate for policy reasons reads as content_filter to OpenAI clients.
_FILTERED = {
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR", "LANGUAGE",
}  # fmt: skip


_SYNTHETIC_ID = re.compile(r"^call_[0-9a-f]{24}$")


def new_call_id() -> str:
    """An id for a function call Gemini sent without one (models before Gemini 3)."""
    return "call_" + secrets.token_hex(12)


def is_synthetic_id(call_id: str) -> bool:
    """Ids Sluice made up are never sent upstream; Gemini's own ids are echoed back."""
    return _SYNTHETIC_ID.match(call_id) is not None


def finish_reason(gemini_reason: str, has_tool_calls: bool) -> str:
    if gemini_reason == "MAX_TOKENS":
        return "length"
    if gemini_reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_gemini(metadata: Any) -> UsageTokens | None:
    """promptTokenCount already includes cached tokens; thoughts are billed as output."""
    if not isinstance(metadata, dict):
        return None
    return UsageTokens(
        prompt=_int(metadata.get("promptTokenCount"))
        + _int(metadata.get("toolUsePromptTokenCount")),
        completion=_int(metadata.get("candidatesTokenCount"))
        + _int(metadata.get("thoughtsTokenCount")),
        cached=_int(metadata.get("cachedContentTokenCount")),
    )


def openai_usage(usage: UsageTokens, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


@dataclass(slots=True)
class CandidateParts:
    text: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def split_parts(candidate: dict[str, Any]) -> CandidateParts:
    """Visible text and OpenAI tool_calls (without ``index``) of one candidate."""
    out = CandidateParts()
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("thought") is True:
            continue  # thought summaries are not part of the answer
        if isinstance(part.get("text"), str):
            out.text.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, dict):
            native_id = call.get("id")
            tool_call: dict[str, Any] = {
                "id": native_id if isinstance(native_id, str) and native_id else new_call_id(),
                "type": "function",
                "function": {
                    "name": str(call.get("name", "")),
                    "arguments": orjson.dumps(call.get("args") or {}).decode(),
                },
            }
            signature = part.get("thoughtSignature")
            if isinstance(signature, str) and signature:
                tool_call["extra_content"] = {"google": {"thought_signature": signature}}
            out.tool_calls.append(tool_call)
    return out


def blocked_reason(parsed: dict[str, Any]) -> str | None:
    feedback = parsed.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    return reason if isinstance(reason, str) else None


def _choice(index: int, candidate: dict[str, Any]) -> dict[str, Any]:
    parts = split_parts(candidate)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(parts.text) if parts.text else None,
        "refusal": None,
    }
    if parts.tool_calls:
        message["tool_calls"] = parts.tool_calls
    reason = str(candidate.get("finishReason") or "STOP")
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(reason, bool(parts.tool_calls)),
    }


def chat_completion(parsed: Any, model: str, n: int) -> tuple[dict[str, Any], UsageTokens | None]:
    if not isinstance(parsed, dict):
        raise UpstreamBadResponse("The upstream returned JSON that is not an object.")
    candidates = parsed.get("candidates")
    if isinstance(candidates, list) and candidates:
        choices = [
            _choice(c["index"] if isinstance(c.get("index"), int) else i, c)
            for i, c in enumerate(candidates)
            if isinstance(c, dict)
        ]
    elif blocked_reason(parsed) is not None:
        # The prompt itself was refused: answer like an OpenAI content filter, not an error,
        # so clients that handle finish_reason="content_filter" need nothing new.
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
            for i in range(max(n, 1))
        ]
    else:
        raise UpstreamBadResponse("The upstream response has no candidates.")
    metadata = parsed.get("usageMetadata")
    usage = usage_from_gemini(metadata)
    response_id = parsed.get("responseId")
    body: dict[str, Any] = {
        "id": f"chatcmpl-{response_id if isinstance(response_id, str) else secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": _now(),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        reasoning = _int(metadata.get("thoughtsTokenCount")) if isinstance(metadata, dict) else 0
        body["usage"] = openai_usage(usage, reasoning)
    return body, usage


def _now() -> int:
    return int(time.time())


def embedding_list(parsed: Any, model: str, encoding: str | None) -> dict[str, Any]:
    """``{"embeddings": [{"values": [...]}, ...]}`` -> OpenAI's embedding list (no usage)."""
    embeddings = parsed.get("embeddings") if isinstance(parsed, dict) else None
    if not isinstance(embeddings, list):
        raise UpstreamBadResponse("The upstream embeddings response has no 'embeddings'.")
    data: list[dict[str, Any]] = []
    for index, item in enumerate(embeddings):
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise UpstreamBadResponse("An upstream embedding has no 'values'.")
        vector: Any = values
        if encoding == "base64":
            # OpenAI's base64 form: the raw little-endian float32 array.
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return {"object": "list", "data": data, "model": model}


def _retry_delay(details: Any) -> str | None:
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(float(delay[:-1]))
            except ValueError:
                return None
    return None


def _key_invalid(details: Any) -> bool:
    return any(
        isinstance(d, dict) and d.get("reason") in ("API_KEY_INVALID", "API_KEY_EXPIRED")
        for d in (details if isinstance(details, list) else ())
    )


def failure_from_error(
    status: int, headers: Mapping[str, str], error: Any, secret: str = ""
) -> UpstreamFailure:
    """Classify Gemini's ``{"error": {"code", "message", "status", "details"}}``."""
    message = error.get("message") if isinstance(error, dict) else None
    code_name = error.get("status") if isinstance(error, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if _key_invalid(details) or code_name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        status = 401 if status == 400 or code_name == "UNAUTHENTICATED" else 403
    lowered = {k.lower(): v for k, v in headers.items()}
    delay = _retry_delay(details)
    if delay is not None and "retry-after" not in lowered:
        lowered["retry-after"] = delay
    return classify(
        status,
        lowered,
        message=message if isinstance(message, str) else None,
        code=code_name.lower() if isinstance(code_name, str) else None,
        secret=secret,
    )
