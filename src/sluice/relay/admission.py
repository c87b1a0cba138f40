"""Admission: everything checked before an upstream is called.

Key -> body -> field validation -> model allowed and served -> price -> rate limits -> budget
reservation. Any failure raises an OpenAI-shaped error and leaves nothing reserved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request

from sluice.auth import check_key, extract_key
from sluice.concurrency import Lease
from sluice.errors import InsufficientQuota, RateLimited
from sluice.keys import KeyRecord
from sluice.limits import LimitDecision
from sluice.metering.pricing import ModelRate, UsageTokens
from sluice.metering.quota import LocalLedger, Reservation, insufficient_quota
from sluice.protocol.validate import RequestView, validate_body
from sluice.providers.base import Endpoint
from sluice.refusals import rpm_refusal
from sluice.relay.http import client_ip, read_json_body, request_id_of
from sluice.relay.model_access import check_model
from sluice.relay.together import both_settled
from sluice.state import AppState

if TYPE_CHECKING:
    from sluice.relay.dialect import Dialect

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
    reservation: Reservation
    limit_headers: dict[str, str]
    started: float  # perf_counter at arrival
    created_at: float  # wall clock at arrival
    # Set when the client speaks another API (e.g. Anthropic): the relay presents through it.
    dialect: Dialect | None = None
    lease: Lease | None = None  # a max_concurrent slot, given back at settlement


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
    budget = key.budget_micro
    if budget is not None:
        ledger = state.ledger
        committed = (
            ledger.committed(key.id, key.spent_micro)
            if isinstance(ledger, LocalLedger)
            else key.spent_micro  # the key cache's, which only lags behind the true spend
        )
        if committed >= budget:
            raise insufficient_quota(budget, committed)
    if key.rpm is not None:
        wait = state.refusals.wait_s(key.id, key.rpm)
        if wait > 0:
            raise rpm_refusal(key.rpm, wait)


async def count_request(state: AppState, key: KeyRecord) -> None:
    """Count one request against the key's rpm only: for calls that reach no upstream and
    cost nothing (``/v1/messages/count_tokens``), which must still not be unlimited."""
    if key.rpm is None:
        return
    decision = await state.limiter.admit(key.id, key.rpm, None, 0)
    if not decision.allowed:
        state.refusals.remember(key.id, key.rpm, decision.retry_after_s)
        raise _rate_limited(key, decision)


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
    try:
        decision, reservation = await _limit_and_reserve(state, key, reserved_tokens, estimate)
    except _WindowRefusal as refused:
        if refused.decision.exceeded == "requests" and key.rpm is not None:
            # Its next requests are refused before their bodies are read, until retry-after.
            state.refusals.remember(key.id, key.rpm, refused.decision.retry_after_s)
        raise
    try:
        lease = await _take_slot(state, key, request_id, reserved_tokens)
    except BaseException:
        await state.ledger.release(reservation)
        raise
    return Admission(
        request_id=request_id,
        key=key,
        view=view,
        body=body,
        raw_body=raw,
        rate=rate,
        prompt_tokens=prompt_tokens,
        reserved_tokens=reserved_tokens,
        reservation=reservation,
        limit_headers=decision.headers,
        started=started,
        created_at=created_at,
        dialect=dialect,
        lease=lease,
    )


class _WindowRefusal(RateLimited):
    """A refusal by the rpm/tpm windows, carrying the limiter's decision."""

    def __init__(self, message: str, decision: LimitDecision, headers: dict[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.decision = decision


def _rate_limited(key: KeyRecord, decision: LimitDecision) -> _WindowRefusal:
    retry_after = max(int(decision.retry_after_s + 0.999), 1)
    return _WindowRefusal(
        f"Rate limit reached for this key on {decision.exceeded} per minute "
        f"(limit {key.rpm if decision.exceeded == 'requests' else key.tpm}). "
        f"Try again in {retry_after}s.",
        decision,
        headers={**decision.headers, "retry-after": str(retry_after)},
    )


async def _limit_and_reserve(
    state: AppState, key: KeyRecord, reserved_tokens: int, estimate: int
) -> tuple[LimitDecision, Reservation]:
    """From this worker's allowance for the key when it has one (no I/O), else exactly."""
    allowances = None if state.redis is None else state.redis.allowances
    if allowances is None:
        return await _admit_exactly(state, key, reserved_tokens, estimate)
    taken = allowances.take(key, reserved_tokens, estimate)
    if taken is not None:
        return taken
    try:
        admitted = await _admit_exactly(state, key, reserved_tokens, estimate)
    except (RateLimited, InsufficientQuota):
        # What this worker holds unused for the key may be what is in the way: give it back
        # and ask once more, so an allowance never refuses a request that would fit.
        if not await allowances.refused_exactly(key.id):
            raise
        admitted = await _admit_exactly(state, key, reserved_tokens, estimate)
    allowances.admitted_exactly(key, reserved_tokens, estimate)
    return admitted


async def _admit_exactly(
    state: AppState, key: KeyRecord, reserved_tokens: int, estimate: int
) -> tuple[LimitDecision, Reservation]:
    """Rate-limit check, then budget reservation; each undone if the other refuses.

    With shared counters (Redis) both are network round trips, so they run concurrently and the
    request pays one round trip instead of two; in memory they run in order (no task overhead).
    """
    limit = state.limiter.admit(key.id, key.rpm, key.tpm, reserved_tokens)
    reserve = state.ledger.reserve(key.id, key.budget_micro, key.spent_micro, estimate)
    if state.redis is None:
        decision = await limit
        if not decision.allowed:
            reserve.close()
            raise _rate_limited(key, decision)
        try:
            return decision, await reserve
        except BaseException:
            await state.limiter.adjust_tokens(key.id, key.tpm, -reserved_tokens)
            raise
    limited, reserved = await both_settled(limit, reserve)
    if isinstance(limited, BaseException) or not limited.allowed:
        if not isinstance(reserved, BaseException):
            await state.ledger.release(reserved)
        if isinstance(limited, BaseException):
            raise limited
        raise _rate_limited(key, limited)
    if isinstance(reserved, BaseException):
        await state.limiter.adjust_tokens(key.id, key.tpm, -reserved_tokens)
        raise reserved
    return limited, reserved


async def _take_slot(
    state: AppState, key: KeyRecord, request_id: str, reserved_tokens: int
) -> Lease | None:
    """A slot under the key's max_concurrent, or 429 (nothing stays reserved)."""
    limit = key.max_concurrent
    if limit is not None:
        lease = await state.concurrency.acquire(key.id, limit, request_id)
    else:  # the default cap: per worker, in memory (concurrency.py says why)
        limit = state.settings.limits.default_max_concurrent
        if not limit:
            return None
        lease = await state.concurrency.acquire_local(key.id, limit, request_id)
    if lease is None:
        await state.limiter.adjust_tokens(key.id, key.tpm, -reserved_tokens)
        raise RateLimited(
            f"Too many concurrent requests for this key (limit {limit}). "
            "Retry when one of your requests has finished.",
            code="concurrency_limit_exceeded",
            headers={"retry-after": "1"},
        )
    return lease
