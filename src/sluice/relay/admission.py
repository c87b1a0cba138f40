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
from sluice.core import UsageTokens
from sluice.endpoints.spec import EndpointSpec, Estimate, EstimateInput
from sluice.keys import KeyRecord
from sluice.metering.pricing import ModelRate
from sluice.protocol.validate import RequestView
from sluice.relay.dialect import Dialect
from sluice.relay.http import client_ip, read_json_body, request_id_of
from sluice.relay.model_access import check_model
from sluice.relay.multipart import SpooledForm, read_multipart
from sluice.state import AppState

__all__ = [
    "Admission",
    "FULL_PRICE_PPM",
    "INTERNAL_KEY_SCOPE",
    "PRICE_PPM_SCOPE",
    "admit",
    "authenticate",
    "count_request",
    "refuse_early",
]

# Set only by Sluice's own in-process calls (sluice.batches): an ASGI scope key, which no client
# can send (headers and paths are all a client controls). The key the batch was created with,
# and the share of the price its lines are billed at, in parts per million.
INTERNAL_KEY_SCOPE = "sluice.internal_key"
PRICE_PPM_SCOPE = "sluice.price_ppm"
FULL_PRICE_PPM = 1_000_000

_PROMPT_MARGIN_TOKENS = 16


@dataclass(slots=True)
class Admission:
    request_id: str
    key: KeyRecord
    spec: EndpointSpec
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
    estimate: Estimate
    # Set when the client speaks another API (e.g. Anthropic): the relay presents through it.
    dialect: Dialect | None = None
    # A multipart request's form (its spooled files are closed when the request is over).
    upload: SpooledForm | None = None
    price_ppm: int = FULL_PRICE_PPM  # batch lines: billed at a discount (relay/billing.py)


async def authenticate(state: AppState, request: Request) -> KeyRecord:
    internal = request.scope.get(INTERNAL_KEY_SCOPE)
    if isinstance(internal, KeyRecord):
        # A batch line: its key passed the address check when the batch was created, and is
        # refused here if it has since been disabled or has expired (check_key's first tests).
        if internal.disabled or internal.is_expired():
            check_key(internal, None)
        return internal
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


async def _read_body(
    state: AppState, request: Request, spec: EndpointSpec, dialect: Dialect | None
) -> tuple[Any, bytes, SpooledForm | None]:
    """(body to validate, its bytes as received, the form if multipart)."""
    limits = state.settings.limits
    if dialect is not None:
        body, raw = await dialect.read_body(request)  # already translated to OpenAI format
        return body, raw, None
    if spec.body == "multipart":
        form = await read_multipart(request, limits.max_multipart_bytes)
        return form.fields(), b"", form
    # Parsing, validating and counting a large body take milliseconds to a second of CPU: for
    # those, each step runs off the event loop (``state.offload``), small bodies stay inline.
    body, raw = await read_json_body(
        request, limits.max_body_bytes, limits.max_json_depth, state.offload
    )
    return body, raw, None


@dataclass(frozen=True, slots=True)
class _Arrival:
    """What is known of a request before its body: who sent it, when, at what price share."""

    request_id: str
    key: KeyRecord
    started: float  # perf_counter
    created_at: float  # wall clock
    price_ppm: int


async def admit(
    state: AppState, request: Request, spec: EndpointSpec, dialect: Dialect | None = None
) -> Admission:
    started = time.perf_counter()
    created_at = time.time()
    request_id = request_id_of(request)
    key = await authenticate(state, request)
    refuse_early(state, key)  # before the body is read, parsed or tokenised
    price_ppm = request.scope.get(PRICE_PPM_SCOPE, FULL_PRICE_PPM)
    arrival = _Arrival(request_id, key, started, created_at, price_ppm)
    body, raw, upload = await _read_body(state, request, spec, dialect)
    try:
        return await _admit_body(state, spec, dialect, arrival, body, raw, upload)
    except BaseException:
        if upload is not None:
            await upload.close()
        raise


async def _admit_body(
    state: AppState,
    spec: EndpointSpec,
    dialect: Dialect | None,
    arrival: _Arrival,
    body: Any,
    raw: bytes,
    upload: SpooledForm | None,
) -> Admission:
    key = arrival.key
    view = await state.offload.run(len(raw), lambda: spec.validate(body))
    if spec.with_defaults is not None:
        completed = spec.with_defaults(body)
        if completed is not None:
            body = completed
            raw = orjson.dumps(body) if upload is None else raw
            view = spec.validate(body)
    model = view.model
    check_model(state.router, key, model)
    upstream_names = (c.config.upstream_model(model) for c in state.router.candidates(model))
    # An upper bound over the channels that may serve it; settled at the served model's rate.
    rate = state.prices.reservation_rate(model, upstream_names, units=spec.units is not None)
    given = EstimateInput(
        body=body,
        view=view,
        tokens=state.tokens,
        default_max_tokens=state.settings.limits.default_max_tokens,
        upload=upload,
    )
    # An upload's estimate may read its spooled files (an audio duration): off the loop.
    weight = len(raw) if upload is None else state.offload.min_bytes
    estimate = await state.offload.run(weight, lambda: spec.estimate(given))
    prompt_tokens = estimate.prompt_tokens
    completion_allowance = estimate.completion_tokens
    # Upstreams count with their own tokenizers; hold a margin so the reservation stays an
    # upper bound and concurrent requests cannot push a key past its budget.
    prompt_allowance = prompt_tokens + prompt_tokens // 5 + _PROMPT_MARGIN_TOKENS
    if estimate.units is not None and not prompt_tokens:
        prompt_allowance = 0  # priced in units only: no tokens to hold
    reserved_tokens = prompt_allowance + completion_allowance
    cost_bound = rate.cost(
        UsageTokens(prompt=prompt_allowance, completion=completion_allowance, units=estimate.units)
    )
    if arrival.price_ppm != FULL_PRICE_PPM:
        cost_bound = cost_bound * arrival.price_ppm // FULL_PRICE_PPM
    hold = await state.admission.admit(key, arrival.request_id, reserved_tokens, cost_bound)
    return Admission(
        request_id=arrival.request_id,
        key=key,
        spec=spec,
        view=view,
        body=body,
        raw_body=raw,
        rate=rate,
        prompt_tokens=prompt_tokens,
        reserved_tokens=reserved_tokens,
        hold=hold,
        limit_headers=hold.headers,
        started=arrival.started,
        created_at=arrival.created_at,
        estimate=estimate,
        dialect=dialect,
        upload=upload,
        price_ppm=arrival.price_ppm,
    )
