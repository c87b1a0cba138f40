"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's API in front.

Requests are translated to OpenAI chat bodies and run through the normal relay (admission,
routing to any channel type, retries, billing), whose OpenAI-format results are translated back.
Errors on these routes leave in Anthropic's shape, ``{"type": "error", "error": {...}}``, with
the same HTTP statuses Sluice uses everywhere else.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.errors import InternalError, SluiceError
from sluice.inbound.anthropic_request import to_openai_chat
from sluice.inbound.anthropic_response import (
    AnthropicStreamWriter,
    MessageContext,
    error_type_for_status,
    to_anthropic_message,
)
from sluice.protocol.validate import validate_chat
from sluice.relay.admission import authenticate, count_request, refuse_early
from sluice.relay.dialect import DialectContext
from sluice.relay.engine import relay
from sluice.relay.http import json_response, read_json_body, request_id_of
from sluice.relay.model_access import check_model
from sluice.state import AppState

__all__ = ["AnthropicDialect", "anthropic_routes", "anthropic_error_response"]

log = logging.getLogger("sluice.inbound")


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.sluice
    return state


def anthropic_error_response(request: Request, exc: SluiceError) -> Response:
    request_id = request_id_of(request)
    status = exc.http_status
    body = {
        "type": "error",
        "error": {"type": error_type_for_status(status), "message": exc.message},
        "request_id": request_id,
    }
    # Anthropic's SDKs read the id from ``request-id``; Sluice's own header is kept too.
    headers = {**exc.headers, "x-request-id": request_id, "request-id": request_id}
    return json_response(body, status, headers)


def _translated(params: Any) -> tuple[dict[str, Any], bytes]:
    body = to_openai_chat(params)
    return body, orjson.dumps(body)


class AnthropicDialect:
    """The relay's ``Dialect`` for Anthropic Messages clients."""

    def __init__(self, state: AppState) -> None:
        self._state = state
        self._thinking = False  # one dialect per request: what the client asked for
        self._stops: tuple[str, ...] = ()
        self.extensions: Mapping[str, Mapping[str, Any]] | None = None

    async def read_body(self, request: Request) -> tuple[dict[str, Any], bytes]:
        state = self._state
        limits = state.settings.limits
        params, raw = await read_json_body(
            request, limits.max_body_bytes, limits.max_json_depth, state.offload
        )
        body, translated = await state.offload.run(len(raw), lambda: _translated(params))
        thinking = params.get("thinking")  # params is an object: to_openai_chat checked it
        self._thinking = isinstance(thinking, dict) and thinking.get("type") != "disabled"
        if isinstance(thinking, dict):
            # Kept out of the OpenAI body; an Anthropic channel receives it exactly as sent.
            self.extensions = {"anthropic": {"thinking": thinking}}
        stop = body.get("stop")
        self._stops = tuple(s for s in stop if isinstance(s, str)) if isinstance(stop, list) else ()
        return body, translated

    def _context(self, context: DialectContext) -> MessageContext:
        return MessageContext(
            message_id=f"msg_{uuid.uuid4().hex}",
            model=context.model,
            stop_sequences=self._stops,
            input_tokens_estimate=context.prompt_tokens,
            count_text=self._state.tokens.count_text,
            thinking=self._thinking,
        )

    def present_whole(self, context: DialectContext, body: bytes) -> bytes:
        return orjson.dumps(to_anthropic_message(orjson.loads(body), self._context(context)))

    async def present_stream(
        self, context: DialectContext, frames: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        writer = AnthropicStreamWriter(self._context(context))
        try:
            # Drain the relay's frames to their end even after message_stop: the session only
            # records the stream as complete (status 200) when its iterator finishes.
            async for frames_read_together in frames:
                events = writer.feed(frames_read_together)
                if events:
                    yield b"".join(events)  # one write, like the OpenAI stream
            events = writer.close()
            if events:
                yield b"".join(events)
        finally:
            close = getattr(frames, "aclose", None)
            if close is not None:
                await close()


async def messages(request: Request) -> Response:
    state = _state(request)
    try:
        response = await relay(state, request, state.endpoints["chat"], AnthropicDialect(state))
    except SluiceError as exc:
        return anthropic_error_response(request, exc)
    except Exception:  # noqa: BLE001 - this route must answer in Anthropic's shape
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return anthropic_error_response(
            request, InternalError("The gateway hit an internal error; it has been logged.")
        )
    response.headers["request-id"] = request_id_of(request)
    return response


async def count_tokens(request: Request) -> Response:
    """Input tokens counted locally (the estimate admission reserves with); no charge, but
    each call counts against the key's rpm, and large bodies are counted off the event loop."""
    state = _state(request)
    try:
        key = await authenticate(state, request)
        refuse_early(state, key)  # an exhausted or rpm-refused key: before the body is read
        limits = state.settings.limits
        params, raw = await read_json_body(
            request, limits.max_body_bytes, limits.max_json_depth, state.offload
        )
        if isinstance(params, dict):
            # count_tokens takes no max_tokens; the translation requires one.
            params = {**params, "max_tokens": 1, "stream": False}
        body, model = await state.offload.run(len(raw), lambda: _validated_chat(params))
        check_model(state.router, key, model)
        await count_request(state, key)  # free, but not unlimited: counts against rpm
        tokens = await state.offload.run(
            len(raw), lambda: state.tokens.count_messages(body["messages"], body.get("tools"))
        )
    except SluiceError as exc:
        return anthropic_error_response(request, exc)
    request_id = request_id_of(request)
    headers = {"x-request-id": request_id, "request-id": request_id}
    return json_response({"input_tokens": tokens}, headers=headers)


def _validated_chat(params: Any) -> tuple[dict[str, Any], str]:
    body = to_openai_chat(params)
    return body, validate_chat(body).model


def anthropic_routes() -> list[Route]:
    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
