"""OpenAI's Responses API: ``POST /v1/responses`` and the stored responses' ``GET``,
``DELETE`` and ``GET …/input_items``.

A request is passed through or translated (docs/responses.md). When every channel serving its
model serves the ``responses`` endpoint spec itself (openai, azure), ``NativeResponses`` hands
the body to the relay untouched under that spec; otherwise ``ResponsesDialect`` translates it
to a chat body (``protocol/responses_request.py``) under the chat spec and presents the chat
answer, whole (``protocol/responses_response.py``) or streamed (``protocol/responses_stream.py``),
as a Response. Either way admission, routing, retries, metering and billing are the relay's.
Responses created with ``store`` (the default) are kept in the database
(``storage/response_store.py``) for the key that made them; ``previous_response_id`` continues
one (forwarded when an upstream holds it, else its context and output come first in the
translated request). Errors are OpenAI-shaped, as on every OpenAI route.

The route reads the body itself (after the key check), because the choice between the two
paths needs the model and the response it continues before the relay admits the request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.errors import InvalidRequest, NotFound, ServiceUnavailable
from sluice.keys import KeyRecord
from sluice.protocol.responses_items import item_page, page_query
from sluice.protocol.responses_request import (
    ResponsesRequest,
    native_input_items,
    previous_response_id_of,
    to_chat_request,
)
from sluice.protocol.responses_response import ResponseContext, to_response
from sluice.protocol.responses_stream import ResponsesStreamWriter
from sluice.providers.base import DONE_FRAME
from sluice.providers.failures import redact_secrets
from sluice.providers.openai_responses import ResponsesStreamMeter
from sluice.providers.sse import SseSplitter
from sluice.relay.admission import authenticate, count_request, refuse_early
from sluice.relay.dialect import DialectContext
from sluice.relay.engine import relay
from sluice.relay.http import json_response, read_json_body, request_id_of
from sluice.state import AppState
from sluice.storage.response_store import ResponseStore, StoredResponse

__all__ = ["NativeResponses", "ResponsesDialect", "responses_routes", "response_store"]

log = logging.getLogger("sluice.inbound")

_T = TypeVar("_T")
_MAX_ID_LENGTH = 64  # the column's width; a longer id names no stored response


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.sluice
    return state


def response_store(state: AppState) -> ResponseStore:
    return ResponseStore(state.engine, state.settings.responses.retention_days)


async def _read_store(call: Awaitable[_T]) -> _T:
    """A stored-response read or delete; a database outage is a 503, never a 500."""
    try:
        return await call
    except (SQLAlchemyError, OSError) as exc:
        log.warning("stored responses unavailable: %s", type(exc).__name__)
        raise ServiceUnavailable(
            "The response store is temporarily unavailable; retry shortly.",
            code="database_unavailable",
            headers={"retry-after": "1"},
        ) from None


def _history(previous: StoredResponse | None) -> list[dict[str, Any]]:
    """What a response continuing ``previous`` sees first: its context, then its output."""
    if previous is None:
        return []
    output = previous.response.get("output")
    return [*previous.input_items, *(output if isinstance(output, list) else ())]


def _translated(params: Any, history: list[dict[str, Any]]) -> tuple[ResponsesRequest, bytes]:
    request = to_chat_request(params, history)
    return request, orjson.dumps(request.chat)


@dataclass(frozen=True, slots=True)
class _Received:
    """A ``POST /v1/responses`` read by the route, before the relay admits it."""

    key: KeyRecord
    params: Any  # the parsed body
    raw: bytes
    previous: StoredResponse | None  # the response ``previous_response_id`` names, if any


class _StoringDialect:
    """What both Responses dialects share: the body the route read, and storage."""

    def __init__(self, state: AppState, received: _Received) -> None:
        self._state = state
        self._received = received
        self.extensions: Mapping[str, Mapping[str, Any]] | None = None
        self.response: dict[str, Any] | None = None  # the last Response object presented
        self._stored = False

    def _input_items(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _wants_storing(self) -> bool:
        params = self._received.params
        return not (isinstance(params, dict) and params.get("store") is False)

    async def store(self, *, upstream_held: bool = False) -> None:
        """Keep the presented response for its key, once, if the client asked (``store``)."""
        response = self.response
        if self._stored or response is None or not isinstance(response.get("id"), str):
            return
        self._stored = True
        if not self._wants_storing():
            return
        items, key_id = self._input_items(), self._received.key.id
        try:
            await response_store(self._state).save(
                response, items, key_id, upstream_held=upstream_held
            )
        except (SQLAlchemyError, OSError):
            # The answer was generated and billed; failing it now would charge for nothing.
            log.warning("response %s could not be stored", response["id"], exc_info=True)


class ResponsesDialect(_StoringDialect):
    """The relay's ``Dialect`` translating the Responses API to chat; one per request."""

    def __init__(self, state: AppState, received: _Received) -> None:
        super().__init__(state, received)
        self.response_id = f"resp_{uuid.uuid4().hex}"
        self._request: ResponsesRequest | None = None

    async def read_body(self, request: Request) -> tuple[dict[str, Any], bytes]:
        received = self._received
        history = _history(received.previous)
        translated, body = await self._state.offload.run(
            len(received.raw), lambda: _translated(received.params, history)
        )
        self._request = translated
        return translated.chat, body

    def _input_items(self) -> list[dict[str, Any]]:
        assert self._request is not None
        return self._request.input_items

    def _wants_storing(self) -> bool:
        return self._request is not None and self._request.store

    def _context(self, context: DialectContext) -> ResponseContext:
        assert self._request is not None
        return ResponseContext(
            response_id=self.response_id,
            model=context.model,
            echo=self._request.echo,
            input_tokens_estimate=context.prompt_tokens,
            count_text=self._state.tokens.count_text,
        )

    def present_whole(self, context: DialectContext, body: bytes) -> bytes:
        self.response = to_response(orjson.loads(body), self._context(context))
        return orjson.dumps(self.response)

    async def present_stream(
        self, context: DialectContext, frames: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        writer = ResponsesStreamWriter(self._context(context), redact_secrets)
        splitter = SseSplitter()
        try:
            # Drain the relay's frames to their end even after the final event: the session
            # records the stream as complete (status 200) only when its iterator finishes.
            async for frames_read_together in frames:
                events: list[bytes] = []
                for event in splitter.feed(frames_read_together):
                    events.extend(_feed(writer, event.data))
                if events:
                    yield await self._before_sending(writer, events)
            events = []
            for event in splitter.flush():
                events.extend(_feed(writer, event.data))
            events.extend(writer.close())
            if events:
                yield await self._before_sending(writer, events)
        finally:
            await _close(frames)

    async def _before_sending(self, writer: ResponsesStreamWriter, events: list[bytes]) -> bytes:
        if writer.finished:
            # Stored before the final event leaves: a client that retrieves the response, or
            # continues from it, as soon as it has the event must find it.
            self.response = writer.response
            await self.store()
        return b"".join(events)  # one write, like the OpenAI stream


class NativeResponses(_StoringDialect):
    """The relay's ``Dialect`` passing the Responses API through untouched (OpenAI channels):
    it only keeps a copy of each response for its key, for ownership and retrieval."""

    async def read_body(self, request: Request) -> tuple[dict[str, Any], bytes]:
        params = self._received.params
        if not isinstance(params, dict):
            raise InvalidRequest(
                "Invalid request body: expected a JSON object.", code="invalid_request_body"
            )
        return params, self._received.raw

    def _input_items(self) -> list[dict[str, Any]]:
        params = self._received.params
        return [*_history(self._received.previous), *native_input_items(params)]

    async def store(self, *, upstream_held: bool = True) -> None:
        await super().store(upstream_held=upstream_held)

    def present_whole(self, context: DialectContext, body: bytes) -> bytes:
        parsed = orjson.loads(body)
        self.response = parsed if isinstance(parsed, dict) else None
        return body

    async def present_stream(
        self, context: DialectContext, frames: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        meter = ResponsesStreamMeter()
        splitter = SseSplitter()
        try:
            async for frames_read_together in frames:
                chunk = frames_read_together
                if chunk.endswith(DONE_FRAME):  # the relay's own end marker: not for clients
                    chunk = chunk[: -len(DONE_FRAME)]
                ended = meter.ended
                for event in splitter.feed(chunk):
                    meter.feed(_json_or_none(event.data))
                if meter.ended and not ended:
                    self.response = meter.response
                    await self.store()  # before the terminal event leaves (as translated)
                if chunk:
                    yield chunk
        finally:
            await _close(frames)


def _json_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return None


async def _close(frames: AsyncIterator[bytes]) -> None:
    close = getattr(frames, "aclose", None)
    if close is not None:
        await close()


def _feed(writer: ResponsesStreamWriter, payload: bytes) -> list[bytes]:
    if not payload:
        return []
    if payload == b"[DONE]":
        return writer.done()
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        log.warning("responses: skipping an undecodable stream chunk")
        return []
    return writer.feed_chunk(chunk)


def _passes_through(state: AppState, params: Any, previous: StoredResponse | None) -> bool:
    """Forward untouched when every channel of the model serves ``/responses`` itself, and
    what it continues (if anything) was passed through too (an upstream holds it)."""
    model = params.get("model") if isinstance(params, dict) else None
    if not isinstance(model, str) or (previous is not None and not previous.upstream_held):
        return False
    spec = state.endpoints["responses"]
    candidates = state.router.candidates(model)
    return bool(candidates) and all(c.config.serves_endpoint(spec) for c in candidates)


async def _previous(state: AppState, key: KeyRecord, params: Any) -> StoredResponse | None:
    previous_id = previous_response_id_of(params)
    if previous_id is None:
        return None
    found = None
    if len(previous_id) <= _MAX_ID_LENGTH:
        found = await _read_store(response_store(state).get(previous_id, key.id))
    if found is None:
        raise InvalidRequest(
            f"Previous response with id '{previous_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return found


async def create_response(request: Request) -> Response:
    state = _state(request)
    # Read here, not by admission, to choose the path (pass-through or translation) from the
    # model and the response it continues; the key first, as admission would, so nobody
    # unauthenticated has a body read. Admission repeats both checks (a cache hit).
    key = await authenticate(state, request)
    refuse_early(state, key)
    limits = state.settings.limits
    params, raw = await read_json_body(
        request, limits.max_body_bytes, limits.max_json_depth, state.offload
    )
    received = _Received(key, params, raw, await _previous(state, key, params))
    dialect: ResponsesDialect | NativeResponses
    if _passes_through(state, params, received.previous):
        dialect = NativeResponses(state, received)
        spec = state.endpoints["responses"]
    else:
        dialect = ResponsesDialect(state, received)
        spec = state.endpoints["chat"]
    response = await relay(state, request, spec, dialect)
    await dialect.store()  # a whole answer (a stream stores itself before its last event)
    return response


# --- stored responses ------------------------------------------------------------------------


async def _key_for_read(request: Request) -> tuple[AppState, KeyRecord]:
    """Authenticated; counted against the key's rpm (free, but not unlimited)."""
    state = _state(request)
    key = await authenticate(state, request)
    await count_request(state, key)
    return state, key


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


async def _stored(request: Request) -> tuple[StoredResponse, dict[str, str]]:
    state, key = await _key_for_read(request)
    response_id: str = request.path_params["response_id"]
    found = None
    if len(response_id) <= _MAX_ID_LENGTH:
        found = await _read_store(response_store(state).get(response_id, key.id))
    if found is None:
        raise _not_found(response_id)
    return found, {"x-request-id": request_id_of(request)}


async def retrieve_response(request: Request) -> Response:
    if request.query_params.get("stream") in ("true", "1"):
        raise InvalidRequest(
            "Streaming a stored response again is not supported on this gateway.",
            param="stream",
            code="unsupported_parameter",
        )
    found, headers = await _stored(request)
    return json_response(found.response, headers=headers)


async def list_input_items(request: Request) -> Response:
    query = page_query(request.query_params)  # before any lookup: a bad query is a 400
    found, headers = await _stored(request)
    return json_response(item_page(found.input_items, query), headers=headers)


async def delete_response(request: Request) -> Response:
    state, key = await _key_for_read(request)
    response_id: str = request.path_params["response_id"]
    deleted = len(response_id) <= _MAX_ID_LENGTH and await _read_store(
        response_store(state).delete(response_id, key.id)
    )
    if not deleted:
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response", "deleted": True}
    return json_response(body, headers={"x-request-id": request_id_of(request)})


def responses_routes() -> list[Route]:
    return [
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    ]
