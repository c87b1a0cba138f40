"""The relay: admit, try channels until one answers, meter, respond.

Retries and failover happen only before the first byte reaches the client. A channel that
failed is never tried again for the same request; client errors (400/404/422 from the upstream)
are returned at once. Whatever happens, the reservation is settled or released exactly once.
An upstream 401/402/403 fails over too but changes no shared state: the channel is disabled
only if its own test request fails the same way (``health_probe.confirm_soon``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response

from sluice.channel_call import ChannelFailed, open_channel
from sluice.core import (
    FailureKind,
    ParsedResponse,
    RelayCall,
    UpstreamFailure,
    UsageTokens,
)
from sluice.endpoints.spec import EndpointSpec, MeterInput
from sluice.errors import (
    InternalError,
    InvalidRequest,
    NoAvailableChannel,
    SluiceError,
    UpstreamBadResponse,
)
from sluice.health import DEAD_CHANNEL_KINDS
from sluice.health_probe import confirm_soon
from sluice.providers.configs import ImageInliningConfig
from sluice.providers.failures import response_too_large
from sluice.providers.media import inline_remote_images
from sluice.relay.admission import Admission, admit
from sluice.relay.billing import Outcome, settle, settle_in_background, settle_soon
from sluice.relay.binary import BinaryRelayResponse
from sluice.relay.dialect import Dialect, DialectContext
from sluice.relay.http import json_response
from sluice.relay.stream import RelayStreamingResponse, StreamSession
from sluice.routing import Channel
from sluice.state import AppState
from sluice.upstream import BodyTooLarge, UpstreamResponse, read_body

__all__ = ["relay"]

log = logging.getLogger("sluice.relay")


@dataclass(slots=True)
class _Attempt:
    channel: Channel
    call: RelayCall
    # Bodies with remote images already inlined, shared by the attempts of one request and
    # keyed by the SSRF policy they were fetched under (a channel that forbids private targets
    # must never get bytes a permissive channel was allowed to fetch).
    inlined: dict[bool, RelayCall]


class _Crashed(Exception):
    """A bug after a channel answered (presenting or translating the answer): carries what
    that answer cost, so the request is recorded as a 500 with it, not as a free 499."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("internal error after the upstream answered")
        self.outcome = outcome


_INTERNAL = Outcome(status=500, error_code="internal_error")  # a bug before any answer


def _crashed(attempt: _Attempt, usage: UsageTokens | None, stream: bool = False) -> _Crashed:
    return _Crashed(
        Outcome(
            status=500,
            channel=attempt.channel.name,
            upstream_model=attempt.call.upstream_model,
            usage=usage,
            # No usage reported: the prompt was still processed, so it is counted locally.
            delivered_text="" if usage is None else None,
            error_code="internal_error",
            stream=stream,
        )
    )


def _failure_error(failure: UpstreamFailure) -> SluiceError:
    error = SluiceError(
        failure.message,
        param=failure.param,
        code=failure.code,
        status=failure.status,
        error_type=failure.type,
    )
    if failure.retry_after_s is not None:
        error.headers["retry-after"] = str(max(int(failure.retry_after_s + 0.999), 1))
    return error


def _dialect_context(admission: Admission) -> DialectContext:
    return DialectContext(model=admission.view.model, prompt_tokens=admission.prompt_tokens)


def _response_headers(admission: Admission) -> dict[str, str]:
    return {"x-request-id": admission.request_id, **admission.limit_headers}


async def relay(
    state: AppState, request: Request, spec: EndpointSpec, dialect: Dialect | None = None
) -> Response:
    admission = await admit(state, request, spec, dialect)
    access = request.scope.get("sluice.log")
    if access is not None:  # for the access log: ids only, never the key itself
        access.update(model=admission.view.model, key_id=admission.key.id)
    state.in_flight += 1
    handed_off = False
    try:
        response = await _dispatch(state, admission)
        handed_off = True
        return response
    except SluiceError as exc:
        await settle(state, admission, Outcome(status=exc.http_status, error_code=exc.code))
        handed_off = True
        raise
    except Exception as exc:
        # A bug (ours or an adapter's), not a client that left: its traceback goes to the
        # server log only; the row is a 500 with what the upstream reported, if it answered.
        log.exception("request %s: internal error", admission.request_id)
        handed_off = True  # first: a failing settlement must not add a second row
        await settle(state, admission, exc.outcome if isinstance(exc, _Crashed) else _INTERNAL)
        raise InternalError("The gateway hit an internal error; it has been logged.") from None
    finally:
        if not handed_off:
            # Cancelled mid-flight (the client left): release the hold, keep a row of it.
            settle_in_background(
                state, admission, Outcome(status=499, error_code="client_closed_request")
            )
        state.in_flight -= 1


def _new_call(admission: Admission, channel: Channel, max_event_bytes: int) -> RelayCall:
    view = admission.view
    return RelayCall(
        endpoint=admission.spec.name,
        path=admission.spec.upstream_path,
        body=admission.body,
        raw_body=admission.raw_body,
        requested_model=view.model,
        upstream_model=channel.config.upstream_model(view.model),
        stream=view.stream,
        client_wants_usage=view.include_usage,
        extensions=None if admission.dialect is None else admission.dialect.extensions,
        max_event_bytes=max_event_bytes,
        upload=admission.upload,
        stream_kind=admission.spec.stream,
    )


async def _dispatch(state: AppState, admission: Admission) -> Response:
    spec = admission.spec
    retry = state.settings.retry
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry.deadline_s
    last: UpstreamFailure | None = None
    attempts = 0
    inlined: dict[bool, RelayCall] = {}
    max_event_bytes = state.settings.limits.max_upstream_event_bytes
    for channel in state.router.plan(admission.view.model, spec, state.health):
        if attempts >= retry.max_attempts or loop.time() >= deadline:
            break
        if attempts:
            state.metrics.retry(spec.name)
        attempts += 1
        call = _new_call(admission, channel, max_event_bytes)
        attempt = _Attempt(channel, call, inlined)
        try:
            return await _try_channel(state, admission, attempt, deadline)
        except ChannelFailed as failed:
            last = failed.failure
            state.health.record_failure(channel.name, admission.view.model, last.kind)
            state.metrics.upstream_error(channel.name, last.kind)
            if last.kind in DEAD_CHANNEL_KINDS:
                # Maybe this request's fault, maybe the channel's: its own probe decides.
                confirm_soon(state, channel, last)
            log.warning(
                "request %s: channel %s failed (%s, upstream status %s)",
                admission.request_id,
                channel.name,
                last.kind,
                last.upstream_status,
            )
            if last.retry_after_s:
                # Honour Retry-After without making this client wait: the next attempt goes to
                # another channel anyway, and this one is tried last by every request until
                # its pause (bounded by max_retry_after_s) is over.
                pause = min(last.retry_after_s, retry.max_retry_after_s)
                state.health.cool_down(channel.name, pause)
            if last.kind == "client" or not _retryable(state, last):
                break
    if last is None and not any(
        c.config.serves_endpoint(spec) for c in state.router.candidates(admission.view.model)
    ):
        # e.g. embeddings for a model served only by Anthropic channels: the client's mistake.
        raise InvalidRequest(
            f"The endpoint '{spec.name}' is not supported by the channels serving the model "
            f"'{admission.view.model}'.",
            param="model",
            code="unsupported_endpoint",
        )
    if last is None or last.code == "upstream_connect_error":
        # Nothing answered at all (open circuits, disabled or unreachable channels): 503.
        raise NoAvailableChannel(
            f"No channel is available for the model '{admission.view.model}' right now.",
        )
    raise _failure_error(last)


def _retryable(state: AppState, failure: UpstreamFailure) -> bool:
    if failure.kind in ("timeout", "bad_response", "auth", "billing"):
        return True
    if failure.upstream_status is None:
        return True  # connection-level failure
    return failure.upstream_status in state.settings.retry.retry_on_status


async def _try_channel(
    state: AppState, admission: Admission, attempt: _Attempt, deadline: float
) -> Response:
    channel, call, config = attempt.channel, attempt.call, attempt.channel.config
    if isinstance(config, ImageInliningConfig):
        # Adapters are pure; providers that need image bytes get remote URLs fetched here
        # (SSRF-guarded, size- and time-capped), once per request and policy, not per attempt.
        # A refused image is a 400 InvalidRequest.
        policy = config.allow_private_image_urls
        done = attempt.inlined.get(policy)
        if done is None:
            done = attempt.inlined[policy] = await inline_remote_images(
                call, config, state.settings.image_fetch, deadline=deadline
            )
        call = attempt.call = replace(call, body=done.body, raw_body=done.raw_body)
    # The upstream sees the same request id as the client and the usage row, unless its type
    # refuses our ids (the local llama.cpp server answers 400 to ids that are not UUIDs).
    request_id = admission.request_id if config.capabilities.request_id_header else None
    budget = deadline - asyncio.get_running_loop().time()
    response = await open_channel(state, channel, call, budget_s=budget, request_id=request_id)
    kind = admission.spec.response_kind(admission.body)
    streamed = call.stream
    if streamed and call.stream_kind == "events":
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "text/event-stream":
            # Asked to stream, the upstream answered whole (whisper-1 ignores ``stream``):
            # its answer goes to the client as it came.
            streamed = False
            kind = "json" if media == "application/json" else "binary"
    if kind == "binary":
        return await _start_binary(state, admission, attempt, response)
    if streamed:
        return await _start_stream(state, admission, attempt, response)
    return await _finish_whole(state, admission, attempt, response)


async def _finish_whole(
    state: AppState, admission: Admission, attempt: _Attempt, response: UpstreamResponse
) -> Response:
    limit = state.settings.limits.max_upstream_body_bytes
    try:
        body = await read_body(response, limit)
    except BodyTooLarge:
        response.close()  # the rest is not wanted: stop the upstream sending it
        raise ChannelFailed(response_too_large("response body", limit)) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        kind: FailureKind = "timeout" if isinstance(exc, TimeoutError) else "bad_response"
        raise ChannelFailed(
            UpstreamFailure(
                status=504 if kind == "timeout" else 502,
                kind=kind,
                message="The upstream response was interrupted.",
                code="upstream_timeout" if kind == "timeout" else "upstream_read_error",
            )
        ) from None
    finally:
        response.release()
    try:
        parsed = attempt.channel.adapter.parse_response(attempt.call, body)
        if admission.spec.reshape is not None:
            parsed = _reshaped(admission, parsed)
    except UpstreamBadResponse as exc:
        raise ChannelFailed(
            UpstreamFailure(status=502, kind="bad_response", message=exc.message, code=exc.code)
        ) from None
    state.health.record_success(attempt.channel.name, admission.view.model)
    try:
        # Before settling: should presenting fail, the caller still settles exactly once.
        presented, usage, delivered = _present_whole(admission, attempt, parsed)
    except Exception as exc:
        raise _crashed(attempt, parsed.usage) from exc
    # The client does not wait for the ledger and limiter round trips (Redis, when shared).
    await settle_soon(
        state,
        admission,
        Outcome(
            status=200,
            channel=attempt.channel.name,
            upstream_model=attempt.call.upstream_model,
            usage=usage,
            delivered_text=delivered,
        ),
    )
    return presented


def _reshaped(admission: Admission, parsed: ParsedResponse) -> ParsedResponse:
    """The answer in its endpoint's one shape (``EndpointSpec.reshape``)."""
    assert admission.spec.reshape is not None
    try:
        decoded = orjson.loads(parsed.body)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse("The upstream returned a body that is not JSON.") from None
    given = MeterInput(admission.body, admission.view, decoded, admission.estimate)
    return admission.spec.reshape(given)


def _present_whole(
    admission: Admission, attempt: _Attempt, parsed: ParsedResponse
) -> tuple[Response, UsageTokens | None, str | None]:
    """The client's response, the usage to bill and, when there is none, the text to count."""
    spec = admission.spec
    body_out = parsed.body
    usage = parsed.usage
    decoded = None
    if spec.units is not None:
        decoded = orjson.loads(parsed.body)
        given = MeterInput(admission.body, admission.view, decoded, admission.estimate, usage)
        units = spec.units(given)
        if units is not None:
            usage = replace(usage or UsageTokens(), units=units)
    if usage is None and spec.show_counted_usage is not None:
        body_out = spec.show_counted_usage(body_out, admission.prompt_tokens)
    if admission.dialect is not None:
        body_out = admission.dialect.present_whole(_dialect_context(admission), body_out)
    delivered = None
    if usage is None:
        delivered = spec.delivered_text(orjson.loads(parsed.body) if decoded is None else decoded)
    return json_response(body_out, headers=_response_headers(admission)), usage, delivered


async def _start_stream(
    state: AppState, admission: Admission, attempt: _Attempt, response: UpstreamResponse
) -> Response:
    """Read until the first client frame exists; failures up to here may still be retried."""
    secret = attempt.channel.config.api_key.get_secret_value()  # masked in error events
    translator = attempt.channel.adapter.stream_translator(attempt.call, secret)
    first: list[bytes] = []
    chunks = response.content.iter_any()
    try:
        async for data in chunks:
            first = translator.feed(data)
            if first:
                break
        else:
            first = translator.close()
    except (aiohttp.ClientError, TimeoutError, OSError):
        response.close()
        raise ChannelFailed(
            UpstreamFailure(
                status=504,
                kind="timeout",
                message="The upstream stream failed before its first event.",
                code="upstream_timeout",
            )
        ) from None
    except Exception as exc:
        response.close()
        raise _crashed(attempt, translator.usage, stream=True) from exc
    if translator.failure is not None and len(first) <= 1:
        response.close()
        raise ChannelFailed(translator.failure)
    state.health.record_success(attempt.channel.name, admission.view.model)
    session = StreamSession(
        state,
        admission,
        channel=attempt.channel.name,
        upstream_model=attempt.call.upstream_model,
        response=response,
        translator=translator,
        first=first,
        chunks=chunks,
        ttft_ms=(time.perf_counter() - admission.started) * 1000,
    )
    headers = _response_headers(admission)
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    if admission.dialect is None:
        return RelayStreamingResponse(session, headers)
    frames = admission.dialect.present_stream(_dialect_context(admission), session.frames())
    return RelayStreamingResponse(session, headers, frames)


async def _start_binary(
    state: AppState, admission: Admission, attempt: _Attempt, response: UpstreamResponse
) -> Response:
    """Read the first chunk (failures up to here may still be retried), then relay the rest
    as it arrives."""
    try:
        first = await response.content.readany()
    except (aiohttp.ClientError, TimeoutError, OSError):
        response.close()
        raise ChannelFailed(
            UpstreamFailure(
                status=504,
                kind="timeout",
                message="The upstream failed before its first byte.",
                code="upstream_timeout",
            )
        ) from None
    state.health.record_success(attempt.channel.name, admission.view.model)
    return BinaryRelayResponse(
        state,
        admission,
        channel=attempt.channel.name,
        upstream_model=attempt.call.upstream_model,
        upstream=response,
        first=first,
        headers=_response_headers(admission),
    )
