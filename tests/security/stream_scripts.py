"""Provider wire-format scripts for ``ScriptedSse``: two words at once, then the rest of an
answer after a pause (the client leaves in it), optionally ending with the upstream's usage.

The usage is large on purpose — a reasoning model's hidden work and a long prompt — so a bill
taken from it can never be mistaken for one counted from the two words the client saw.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.fakes.scripted_sse_upstream import Step

MODEL = "test-drain"
PROMPT, OUTPUT, REASONING = 5000, 3000, 2990
WORDS = ["Hel", "lo", " the", "re", " dear", " friend", "!"]
HEAD = 2  # words sent at once; the client leaves after reading them
PROVIDERS = ["openai", "azure", "anthropic", "gemini", "anthropic-inbound"]


def channel(provider: str, url: str, **overrides: Any) -> dict[str, Any]:
    kind = {"anthropic-inbound": "openai-compatible", "openai": "openai-compatible"}
    config: dict[str, Any] = {
        "name": "up",
        "type": kind.get(provider, provider),
        "base_url": url + "/v1" if kind.get(provider) else url,
        "api_key": "sk-upstream-drain-0123456789",
        "models": ["test-*"],
    }
    config.update(overrides)
    return config


def script(provider: str, *, usage: bool, hold_s: float, gap_s: float = 0.05) -> list[Step]:
    """The whole stream; ``hold_s`` is the pause after the first ``HEAD`` words."""
    build = {"anthropic": _anthropic, "gemini": _gemini}.get(provider, _openai)
    head, rest, end = build(usage)
    delays = [hold_s] + [gap_s] * (len(rest) - 1)
    return [(0.0, data) for data in head] + list(zip(delays, rest, strict=True)) + end


def _sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    line = b"data: " + orjson.dumps(payload) + b"\n\n"
    return line if event is None else f"event: {event}\n".encode() + line


Parts = tuple[list[bytes], list[bytes], list[Step]]


def _openai(usage: bool) -> Parts:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({"id": "chatcmpl-drain", "object": "chat.completion.chunk", "created": 7,
                     "model": MODEL, "choices": [choice]})  # fmt: skip

    head = [chunk({"role": "assistant", "content": ""})]
    head += [chunk({"content": word}) for word in WORDS[:HEAD]]
    rest = [chunk({"content": word}) for word in WORDS[HEAD:]] + [chunk({}, "stop")]
    end: list[Step] = []
    if usage:
        numbers = {"prompt_tokens": PROMPT, "completion_tokens": OUTPUT,
                   "total_tokens": PROMPT + OUTPUT,
                   "completion_tokens_details": {"reasoning_tokens": REASONING}}  # fmt: skip
        end.append((0.0, _sse({"id": "chatcmpl-drain", "object": "chat.completion.chunk",
                               "created": 7, "model": MODEL, "choices": [],
                               "usage": numbers})))  # fmt: skip
    end.append((0.0, b"data: [DONE]\n\n"))
    return head, rest, end


def _anthropic(usage: bool) -> Parts:
    def delta(text: str) -> bytes:
        body = {"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}  # fmt: skip
        return _sse(body, "content_block_delta")

    message: dict[str, Any] = {
        "id": "msg_drain", "type": "message", "role": "assistant", "model": MODEL,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": PROMPT, "output_tokens": 1}}  # fmt: skip
    head = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),  # fmt: skip
        *(delta(word) for word in WORDS[:HEAD]),
    ]
    rest = [delta(word) for word in WORDS[HEAD:]]
    rest.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    final: dict[str, Any] = {"type": "message_delta", "delta": stop}
    if usage:
        final["usage"] = {"output_tokens": OUTPUT}
    end: list[Step] = [
        (0.0, _sse(final, "message_delta")),
        (0.0, _sse({"type": "message_stop"}, "message_stop")),
    ]
    return head, rest, end


def _gemini(usage: bool) -> Parts:
    def event(text: str, finish: str | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"},
                                     "index": 0}  # fmt: skip
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "modelVersion": MODEL}

    head = [_sse(event(word)) for word in WORDS[:HEAD]]
    rest = [_sse(event(word)) for word in WORDS[HEAD:]]
    final = event("", "STOP")
    if usage:  # Gemini's figures grow event by event; only the last one counts
        final["usageMetadata"] = {"promptTokenCount": PROMPT,
                                  "candidatesTokenCount": OUTPUT - REASONING,
                                  "thoughtsTokenCount": REASONING,
                                  "totalTokenCount": PROMPT + OUTPUT}  # fmt: skip
    return head, rest, [(0.0, _sse(final))]
