"""OpenAI and OpenAI-compatible upstreams (OpenAI, vLLM, llama.cpp, Ollama, DeepSeek, local).

Requests are forwarded with every field intact; the body is re-serialised only when something
must change (model mapping, forced stream usage, reasoning-model parameters). Streams are passed
through frame by frame, and only chunks that carry usage, an error or need local counting are
decoded.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sluice.core import (
    ParsedResponse,
    RelayCall,
    StreamTranslator,
    UpstreamFailure,
    UpstreamRequest,
    UsageTokens,
)
from sluice.errors import UpstreamBadResponse
from sluice.providers.base import DONE_FRAME, sse_frame
from sluice.providers.chat_via_responses import (
    ResponsesStreamTranslator,
    chat_as_responses_body,
    chat_from_response,
)
from sluice.providers.configs import OpenAIWireConfig
from sluice.providers.failures import (
    classify,
    response_too_large,
    stream_error,
    stream_truncated,
)
from sluice.providers.openai_responses import ResponsesPassThrough, usage_of_response
from sluice.providers.sse import SseEventTooLarge, SseSplitter, parse_span

__all__ = [
    "OpenAIAdapter",
    "OpenAIStreamTranslator",
    "usage_from_openai",
    "openai_error_details",
    "prepare_openai_body",
    "openai_request",
]

JSON_TYPE = "application/json"
# Answers that must carry ``choices`` or ``data``: a body without either is not an answer.
_LISTING_ENDPOINTS = frozenset({"chat", "completions", "embeddings"})
_REASONING_MODEL = re.compile(r"^(o\d+)(-|$)")
# Sampling controls OpenAI's reasoning models reject.
_REASONING_UNSUPPORTED = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)


def is_reasoning_model(model: str) -> bool:
    return _REASONING_MODEL.match(model.rsplit("/", 1)[-1]) is not None


def usage_from_openai(usage: Any) -> UsageTokens | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    prompt_value = usage.get("prompt_tokens", usage.get("input_tokens"))
    prompt = prompt_value if isinstance(prompt_value, int) else 0
    completion_value = usage.get("completion_tokens")
    if isinstance(completion_value, int):
        completion = completion_value
    else:
        total = usage.get("total_tokens")
        completion = total - prompt if isinstance(total, int) and total >= prompt else 0
    # gpt-image models report the image part of their input, priced apart (``ModelRate.cost``).
    input_details = usage.get("input_tokens_details")
    image = input_details.get("image_tokens") if isinstance(input_details, dict) else None
    return UsageTokens(
        prompt=max(prompt, 0),
        completion=max(completion, 0),
        cached=cached if isinstance(cached, int) and cached > 0 else 0,
        image_prompt=image if isinstance(image, int) and image > 0 else 0,
    )


def prepare_openai_body(
    call: RelayCall, *, force_stream_usage: bool, reasoning_rules: bool
) -> bytes:
    """The body to send: the client's bytes when nothing changes, else a re-serialised copy."""
    changes: dict[str, Any] = {}
    if call.upstream_model != call.requested_model:
        changes["model"] = call.upstream_model
    # Typed-event streams carry their usage and their endpoints refuse ``stream_options``.
    if (
        call.stream
        and force_stream_usage
        and not call.client_wants_usage
        and call.stream_kind == "chunks"
    ):
        options = call.body.get("stream_options")
        merged = dict(options) if isinstance(options, dict) else {}
        merged["include_usage"] = True
        changes["stream_options"] = merged
    if reasoning_rules and call.endpoint == "chat" and is_reasoning_model(call.upstream_model):
        body = {**call.body, **changes}
        if "max_tokens" in body:
            body.setdefault("max_completion_tokens", body.pop("max_tokens"))
        for name in _REASONING_UNSUPPORTED:
            body.pop(name, None)
        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            if messages[0].get("role") == "system":
                body["messages"] = [{**messages[0], "role": "developer"}, *messages[1:]]
        return orjson.dumps(body)
    if not changes:
        return call.raw_body
    return orjson.dumps({**call.body, **changes})


def openai_request(
    url: str,
    headers: dict[str, str],
    call: RelayCall,
    *,
    force_stream_usage: bool,
    reasoning_rules: bool = False,
) -> UpstreamRequest:
    """The OpenAI-format request to ``url``: the JSON body, or a multipart form re-encoded
    from its spool with the upstream's model name (``call.upload``)."""
    if call.upload is not None:
        form = call.upload.encoded({"model": call.upstream_model})
        headers = {"content-type": form.content_type, **headers}
        return UpstreamRequest(url=url, headers=headers, body=b"", stream=form)
    body = prepare_openai_body(
        call, force_stream_usage=force_stream_usage, reasoning_rules=reasoning_rules
    )
    return UpstreamRequest(url=url, headers={"content-type": JSON_TYPE, **headers}, body=body)


def openai_error_details(body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, code, param, type) from an OpenAI-shaped error body, tolerating junk."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, dict):
        detail = parsed.get("detail") if isinstance(parsed, dict) else None
        return (detail if isinstance(detail, str) else None), None, None, None

    def text(name: str) -> str | None:
        value = error.get(name)
        return None if value is None else str(value)

    return text("message"), text("code"), text("param"), text("type")


class OpenAIAdapter:
    """Adapter for channel types ``openai``, ``openai-compatible`` and ``local``."""

    def __init__(
        self,
        name: str = "openai",
        reasoning_rules: bool = False,
        responses_models: Sequence[str] = (),
    ) -> None:
        self.name = name
        # OpenAI's reasoning-model rewrites (keyed on model names): for OpenAI itself only.
        self._reasoning_rules = reasoning_rules
        self._responses_models = tuple(responses_models)

    def _via_responses(self, call: RelayCall) -> bool:
        """A chat call for a model the channel serves only through the Responses API."""
        return (
            bool(self._responses_models)
            and call.endpoint == "chat"
            and any(fnmatch.fnmatchcase(call.upstream_model, p) for p in self._responses_models)
        )

    def build_request(self, call: RelayCall, channel: OpenAIWireConfig) -> UpstreamRequest:
        headers = {}
        secret = channel.api_key.get_secret_value()
        if secret:
            headers["authorization"] = f"Bearer {secret}"
        headers.update(channel.headers)
        if self._via_responses(call):
            headers["content-type"] = JSON_TYPE
            url = channel.base_url + "/responses"
            return UpstreamRequest(url=url, headers=headers, body=chat_as_responses_body(call))
        return openai_request(
            channel.base_url + call.path,
            headers,
            call,
            # /responses streams report usage in their last event and refuse stream_options.
            force_stream_usage=channel.stream_usage and call.endpoint != "responses",
            reasoning_rules=self._reasoning_rules,
        )

    def parse_response(self, call: RelayCall, body: bytes) -> ParsedResponse:
        if self._via_responses(call):
            return chat_from_response(body, call.upstream_model)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse("The upstream returned a body that is not JSON.") from None
        if not isinstance(parsed, dict):
            raise UpstreamBadResponse("The upstream returned JSON that is not an object.")
        if call.endpoint in _LISTING_ENDPOINTS and "choices" not in parsed and "data" not in parsed:
            raise UpstreamBadResponse("The upstream response has neither choices nor data.")
        if call.endpoint == "responses":
            return ParsedResponse(body=body, usage=usage_of_response(parsed))
        return ParsedResponse(body=body, usage=usage_from_openai(parsed.get("usage")))

    def stream_translator(self, call: RelayCall, secret: str = "") -> StreamTranslator:
        if self._via_responses(call):
            return ResponsesStreamTranslator(call, secret)
        if call.stream_kind == "events":
            # Imported here: openai_events builds on this module's error and usage readers.
            from sluice.providers.openai_events import EventStreamTranslator

            return EventStreamTranslator(secret=secret, max_event_bytes=call.max_event_bytes)
        if call.endpoint == "responses":
            return ResponsesPassThrough(secret, call.max_event_bytes)
        return self.chat_stream_translator(call, secret)

    def chat_stream_translator(self, call: RelayCall, secret: str = "") -> OpenAIStreamTranslator:
        """The translator of an OpenAI-format (``[DONE]``-terminated) stream."""
        return OpenAIStreamTranslator(
            strip_usage_chunk=not call.client_wants_usage,
            secret=secret,
            max_event_bytes=call.max_event_bytes,
        )

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, secret: str = ""
    ) -> UpstreamFailure:
        message, code, param, type_ = openai_error_details(body)
        return classify(
            status,
            headers,
            message=message,
            code=code,
            param=param,
            provider_type=type_,
            secret=secret,
        )


class OpenAIStreamTranslator:
    """Pass-through of an OpenAI SSE stream that decodes only what metering needs."""

    def __init__(
        self, *, strip_usage_chunk: bool, secret: str = "", max_event_bytes: int = 0
    ) -> None:
        self._strip_usage_chunk = strip_usage_chunk
        self._secret = secret  # the channel's key, masked in error events
        self._splitter = SseSplitter(max_event_bytes)
        self._usage: UsageTokens | None = None
        self._failure: UpstreamFailure | None = None
        self._done = False
        # Payloads kept only until the upstream reports usage, so that text can be counted
        # locally when it never does (llama.cpp) or the client leaves early.
        self._retained: list[bytes] = []

    @property
    def usage(self) -> UsageTokens | None:
        return self._usage

    @property
    def failure(self) -> UpstreamFailure | None:
        return self._failure

    def feed(self, data: bytes) -> list[bytes]:
        if self._done:
            return []
        try:
            span = self._splitter.take_complete(data)
        except SseEventTooLarge:
            return [self._fail(response_too_large("stream event", self._splitter.limit))]
        if not span:
            return []
        frames: list[bytes] = []
        # Ordinary content chunks are forwarded as the bytes they arrived in, a whole run of
        # them at once: byte scans in C instead of Python work per frame. Frames from the
        # first one that may carry usage, an error or [DONE] on are handled one by one.
        special = _first_special(span)
        plain_end = len(span) if special < 0 else span.rfind(b"\n\n", 0, special)
        if plain_end > 0 and _only_plain_chunks(span[:plain_end]):
            plain = span[:plain_end]
            if self._usage is None:
                self._retained.append(plain)
            frames.append(plain + b"\n\n")
            span = span[plain_end + 2 :]
        for event in parse_span(span):
            frame = self._translate(event.data)
            if frame is not None:
                frames.append(frame)
        return frames

    def _translate(self, payload: bytes) -> bytes | None:
        if self._done or not payload:
            return None
        if payload == b"[DONE]":
            self._done = True
            return DONE_FRAME
        if payload.startswith(b'{"error"') or b'"error":{' in payload[:20]:
            return self._error_event(payload)
        if b'"usage":{' in payload or b'"usage": {' in payload:
            chunk = _loads(payload)
            if chunk is None:
                return sse_frame(payload)
            usage = usage_from_openai(chunk.get("usage"))
            if usage is not None:
                self._usage = usage
                self._retained.clear()
            if self._strip_usage_chunk and not chunk.get("choices"):
                return None
            if usage is None:
                self._retained.append(payload)
            return sse_frame(payload)
        if self._usage is None:
            self._retained.append(payload)
        return sse_frame(payload)

    def _error_event(self, payload: bytes) -> bytes:
        message, code, _param, _type = openai_error_details(payload)
        return self._fail(stream_error(message, code, self._secret))

    def _fail(self, failure: UpstreamFailure) -> bytes:
        self._failure = failure
        self._done = True
        return sse_frame(orjson.dumps(failure.to_openai_error()))

    def close(self) -> list[bytes]:
        if self._done:
            return []
        for event in self._splitter.flush():
            frame = self._translate(event.data)
            if frame is not None and self._done:
                return [frame]
        self._failure = stream_truncated()
        self._done = True
        return [sse_frame(orjson.dumps(self._failure.to_openai_error()))]

    def delivered_text(self) -> str:
        parts: list[str] = []
        for payload in _retained_payloads(self._retained):
            chunk = _loads(payload)
            if chunk is None:
                continue
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    _collect_delta_text(delta, parts)
                elif isinstance(choice.get("text"), str):
                    parts.append(choice["text"])
        return "".join(parts)

    def forget_delivered(self) -> None:
        self._retained.clear()


_SPECIAL_MARKERS = (b'"usage":{', b'"usage": {', b'"error"', b"data: [DONE]")


def _first_special(span: bytes) -> int:
    """Offset of the first marker of a frame that needs decoding, or -1."""
    found = [at for at in (span.find(marker) for marker in _SPECIAL_MARKERS) if at >= 0]
    return min(found) if found else -1


def _only_plain_chunks(span: bytes) -> bool:
    """Every block is one ``data: {...}`` line: no other field, comment or blank payload (the
    frames the per-frame path would forward unchanged)."""
    separators = span.count(b"\n\n")
    return (
        span.startswith(b"data: {")
        and span.count(b"\n\ndata: {") == separators
        and span.count(b"\n") == 2 * separators
    )


def _retained_payloads(retained: list[bytes]) -> list[bytes]:
    # Runs of plain chunks are kept as the span they arrived in (``data: ...`` lines);
    # frames handled one by one as their bare payload.
    payloads: list[bytes] = []
    for item in retained:
        if item.startswith(b"data: "):
            payloads.extend(block[6:] for block in item.split(b"\n\n"))
        else:
            payloads.append(item)
    return payloads


def _collect_delta_text(delta: dict[str, Any], parts: list[str]) -> None:
    for name in ("content", "reasoning_content", "refusal"):
        value = delta.get(name)
        if isinstance(value, str):
            parts.append(value)
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for name in ("name", "arguments"):
                value = function.get(name)
                if isinstance(value, str):
                    parts.append(value)


def _loads(payload: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
