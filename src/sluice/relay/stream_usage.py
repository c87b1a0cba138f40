"""The usage chunk a client asked for when the upstream sent none.

With ``stream_options.include_usage`` an OpenAI stream ends with a chunk that has no choices
and the request's usage. llama.cpp's server, the embedded ``local`` channel and some relays
send none; the relay then adds it itself, with the counts it bills (counted locally), and the
stream's own id, object, created and model, taken from its first chunk. Built once, at the end
of the stream: the pass-through does no per-chunk work for it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from sluice.core import UsageTokens
from sluice.providers.base import DONE_FRAME, sse_frame

__all__ = ["with_usage_chunk"]


def with_usage_chunk(
    batch: list[bytes], first_frame: bytes, usage: UsageTokens, *, model: str, kind: str
) -> list[bytes]:
    """``batch`` (the frames ending the stream) with the usage chunk just before ``[DONE]``."""
    at = batch.index(DONE_FRAME)
    return [*batch[:at], _usage_chunk(first_frame, usage, model=model, kind=kind), *batch[at:]]


def _usage_chunk(first_frame: bytes, usage: UsageTokens, *, model: str, kind: str) -> bytes:
    seen = _first_chunk(first_frame)
    created = seen.get("created")
    chunk: dict[str, Any] = {
        "id": _text(seen, "id") or "chatcmpl-" + secrets.token_hex(12),
        "object": _text(seen, "object") or kind,  # the upstream's own, else the spec's
        "created": created if isinstance(created, int) else int(time.time()),
        "model": _text(seen, "model") or model,
    }
    fingerprint = _text(seen, "system_fingerprint")
    if fingerprint:
        chunk["system_fingerprint"] = fingerprint
    chunk["choices"] = []
    chunk["usage"] = {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
    }
    return sse_frame(orjson.dumps(chunk))


def _first_chunk(frame: bytes) -> dict[str, Any]:
    # Translators emit ``data: {...}`` frames; a run of plain chunks arrives joined, so only
    # the block up to the first blank line is decoded.
    end = frame.find(b"\n\n")
    if not frame.startswith(b"data: ") or end < 0:
        return {}
    try:
        parsed = orjson.loads(frame[6:end])
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _text(chunk: dict[str, Any], name: str) -> str | None:
    value = chunk.get(name)
    return value if isinstance(value, str) and value else None
