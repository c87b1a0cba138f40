"""Admission: everything checked before an upstream is called.

Key -> body -> field validation -> model allowed and served -> price -> rate limits -> budget
reservation. Any failure raises an OpenAI-shaped error and leaves nothing reserved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from sluice.admission.backend import Hold
from sluice.auth import check_key, extract_key
from sluice.core import Endpoint, UsageTokens
from sluice.keys import KeyRecord
from sluice.metering.pricing import ModelRate
from sluice.protocol.validate import RequestView, validate_body
from sluice.relay.dialect import Dialect
from sluice.relay.http import client_ip, read_json_body, request_id_of
from sluice.relay.model_access import check_model
from sluice.state import AppState

__all__ = ["Admission", "admit", "authenticate", "count_request", "refuse_early"]

_DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
_PROMPT_MARGIN_TOKENS = 16


@dataclass(slots=True)
class Admission:
    request_id: str
    key: KeyRecord
    view: RequestView
    body: dict[str, Any]
    raw_body: bytes
    rate: ModelRate  # reservation rate: the dearest candidate channel's upstream model
    prompt_tokens: int  # counted locally
    reserved_tokens: int  # prompt + worst-case completion, as charged to the tpm window
    hold: Hold  # budget, tpm tokens and concurrency slot: settled or released exactly once
    limit_headers: dict[str, str]
    started: float  # perf_counter at arrival
    created_at: float  # wall clock at arrival
    # Set when the client speaks another API (e.g. Anthropic): the relay presents through it.
    dialect: Dialect | None = None


async def authenticate(state: AppState, request: Request) -> KeyRecord:
    secret = extract_key(
        request.headers.get("authorization"),
        request.headers.get("x-api-key") or request.headers.get("api-key"),
    )
    address = client_ip(request)
    record = await state.key_cache.lookup(secret, address)
    check_key(record, address)
    return record


def refuse_early(state: AppState, key: KeyRecord) -> None:
    """Refusals known without the body (``sluice.refusals``): O(1), no I/O.

    A key whose budget is spent, or that was refused on its rpm and has not waited the
    retry-after it was told, is refused before its body is parsed and its tokens counted.
    """
    state.admission.refuse_early(key)


async def count_request(state: AppState, key: KeyRecord) -> None:
    """Count one request against the key's rpm only: for calls that reach no upstream and
    cost nothing (``/v1/messages/count_tokens``), which must still not be unlimited."""
    await state.admission.count(key)


def _estimate_prompt(state: AppState, endpoint: Endpoint, body: dict[str, Any]) -> int:
    tokens = state.tokens
    if endpoint == "chat":
        return tokens.count_messages(body.get("messages") or [], body.get("tools"))
    if endpoint == "completions":
        return tokens.count_prompt(body.get("prompt"))
    return tokens.count_prompt(body.get("input"))


def _completion_allowance(state: AppState, view: RequestView) -> int:
    if view.endpoint not in ("chat", "completions"):
        return 0
    per_choice = view.max_tokens or state.settings.limits.default_max_tokens
    return per_choice * view.n


async def admit(
    state: AppState, request: Request, endpoint: Endpoint, dialect: Dialect | None = None
) -> Admission:
    started = time.perf_counter()
    created_at = time.time()
    request_id = request_id_of(request)
    key = await authenticate(state, request)
    refuse_early(state, key)  # before the body is read, parsed or tokenised
    limits = state.settings.limits
    # Parsing, validating and counting a large body take milliseconds to a second of CPU: for
    # those, each step runs off the event loop (``state.offload``), small bodies stay inline.
    if dialect is None:
        body, raw = await read_json_body(
            request, limits.max_body_bytes, limits.max_json_depth, state.offload
        )
    else:
        body, raw = await dialect.read_body(request)  # already translated to OpenAI format
    view = await state.offload.run(len(raw), lambda: validate_body(endpoint, body))
    if endpoint == "moderations" and not view.model:
        body = {**body, "model": _DEFAULT_MODERATION_MODEL}
        raw = orjson.dumps(body)
        view = validate_body(endpoint, body)
    model = view.model
    check_model(state.router, key, model)
    upstream_names = (c.config.upstream_model(model) for c in state.router.candidates(model))
    # An upper bound over the channels that may serve it; settled at the served model's rate.
    rate = state.prices.reservation_rate(model, upstream_names)
    prompt_tokens = await state.offload.run(
        len(raw), lambda: _estimate_prompt(state, endpoint, body)
    )
    completion_allowance = _completion_allowance(state, view)
    # Upstreams count with their own tokenizers; hold a margin so the reservation stays an
    # upper bound and concurrent requests cannot push a key past its budget.
    prompt_allowance = prompt_tokens + prompt_tokens // 5 + _PROMPT_MARGIN_TOKENS
    reserved_tokens = prompt_allowance + completion_allowance
    estimate = rate.cost(UsageTokens(prompt=prompt_allowance, completion=completion_allowance))
    hold = await state.admission.admit(key, request_id, reserved_tokens, estimate)
    return Admission(
        request_id=request_id,
        key=key,
        view=view,
        body=body,
        raw_body=raw,
        rate=rate,
        prompt_tokens=prompt_tokens,
        reserved_tokens=reserved_tokens,
        hold=hold,
        limit_headers=hold.headers,
        started=started,
        created_at=created_at,
        dialect=dialect,
    )
