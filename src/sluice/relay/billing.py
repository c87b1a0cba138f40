"""Settlement: turn what happened into one usage row and a charge, exactly once per request."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sluice.core import MeteredUnits, UsageTokens
from sluice.endpoints.spec import MeterInput
from sluice.relay.admission import FULL_PRICE_PPM, Admission
from sluice.state import AppState
from sluice.storage.usage_sink import UsageRow

log = logging.getLogger("sluice.billing")

__all__ = [
    "Outcome",
    "counted_usage",
    "request_units",
    "settle",
    "settle_in_background",
    "settle_logged",
    "settle_soon",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    channel: str | None = None
    upstream_model: str | None = None
    usage: UsageTokens | None = None  # as reported by the upstream
    delivered_text: str | None = None  # for local counting when usage is None
    error_code: str | None = None
    ttft_ms: float | None = None
    stream: bool = False
    # A stream the client cut short whose upstream then reported no usage: what it generated
    # is unknown, so the reservation is billed (or the delivered text, if that costs more).
    bill_reservation: bool = False


def _metered_usage(state: AppState, admission: Admission, outcome: Outcome) -> UsageTokens:
    if outcome.usage is not None:
        return outcome.usage
    if outcome.delivered_text is None:
        return UsageTokens()
    # The upstream reported nothing (llama.cpp streams, or the client left early): count.
    return counted_usage(state, admission, outcome.delivered_text)


def counted_usage(state: AppState, admission: Admission, text: str) -> UsageTokens:
    """Usage counted locally: the prompt estimate and the generated text."""
    return UsageTokens(prompt=admission.prompt_tokens, completion=state.tokens.count_text(text))


def request_units(admission: Admission) -> UsageTokens | None:
    """The spec's units for the request itself (characters spoken, seconds of audio sent), for
    an answer that carries no figures of its own: audio bytes, subtitles, an unmetered stream.
    None when the spec meters no units."""
    units_of = admission.spec.units
    if units_of is None:
        return None
    units = units_of(MeterInput(admission.body, admission.view, None, admission.estimate))
    return None if units is None else UsageTokens(units=units)


def _reserved_usage(admission: Admission) -> UsageTokens:
    """The reservation as a usage row: the local prompt count, the rest of the reserved tokens
    (prompt margin and completion allowance) as completion, so the tpm window keeps them."""
    prompt = admission.prompt_tokens
    return UsageTokens(prompt=prompt, completion=max(admission.reserved_tokens - prompt, 0))


async def settle(state: AppState, admission: Admission, outcome: Outcome) -> UsageRow:
    hold = admission.hold
    try:
        return await _settled(state, admission, outcome)
    finally:
        try:
            if not hold.done:  # failed before the hold was settled: nothing may stay held
                await state.admission.release(hold)
        finally:
            if admission.upload is not None:  # the request is over: its spooled files go
                await admission.upload.close()


async def _settled(state: AppState, admission: Admission, outcome: Outcome) -> UsageRow:
    usage = _metered_usage(state, admission, outcome)
    rate = state.prices.settlement_rate(
        admission.view.model,
        outcome.upstream_model,
        admission.rate,
        units=admission.spec.units is not None,
    )
    cost = rate.cost(usage)
    if admission.price_ppm != FULL_PRICE_PPM:  # batch lines (sluice.batches): discounted
        cost = cost * admission.price_ppm // FULL_PRICE_PPM
    if outcome.bill_reservation and admission.hold.amount > cost:
        usage, cost = _reserved_usage(admission), admission.hold.amount
    await state.admission.settle(admission.hold, cost, usage.prompt + usage.completion)
    row = UsageRow(
        request_id=admission.request_id,
        key_id=admission.key.id,
        endpoint=admission.view.endpoint,
        model=admission.view.model,
        upstream_model=outcome.upstream_model,
        channel=outcome.channel,
        prompt_tokens=usage.prompt,
        cached_tokens=usage.cached,
        completion_tokens=usage.completion,
        cost_micro=cost,
        status=outcome.status,
        error_code=outcome.error_code,
        latency_ms=(time.perf_counter() - admission.started) * 1000,
        ttft_ms=outcome.ttft_ms,
        stream=outcome.stream,
        created_at=admission.created_at,
    )
    if usage.units is not None:
        _record_units(row, usage.units)
    state.usage_sink.record(row)
    _observe(state, row)
    return row


def _record_units(row: UsageRow, units: MeteredUnits) -> None:
    # Set after construction: a chat row (no units) is built exactly as before.
    row.images = units.images
    row.audio_seconds = units.audio_seconds
    row.characters = units.characters
    row.search_units = units.search_units
    row.calls = units.calls
    row.video_seconds = units.video_seconds


def _observe(state: AppState, row: UsageRow) -> None:
    # Settlement happens exactly once per relayed request: the one place to count it.
    metrics = state.metrics
    metrics.observe_relay(
        endpoint=row.endpoint,
        model=row.model,
        channel=row.channel,
        status=row.status,
        latency_s=row.latency_ms / 1000,
        ttft_s=None if row.ttft_ms is None else row.ttft_ms / 1000,
        prompt=row.prompt_tokens,
        completion=row.completion_tokens,
        cached=row.cached_tokens,
        cost_micro=row.cost_micro,
    )
    metrics.usage_queue.set(state.usage_sink.depth)


def settle_in_background(state: AppState, admission: Admission, outcome: Outcome) -> None:
    """Settle off the response path; tracked so shutdown waits for it, logged if it fails."""
    state.spawn(settle_logged(state, admission, outcome))


async def settle_soon(state: AppState, admission: Admission, outcome: Outcome) -> None:
    """Settle without making the client wait for a shared store.

    A hold whose settlement waits for I/O (shared counters: Redis round trips) is settled by a
    background task. Otherwise (in-process, or a request admitted from a worker's allowance,
    settled in its lease's next batch) it completes without suspending, and a task would cost
    more than the work. Which is which is the admission backend's business (``Hold.waits``).
    """
    if not admission.hold.waits:
        await settle_logged(state, admission, outcome)
    else:
        settle_in_background(state, admission, outcome)


async def settle_logged(state: AppState, admission: Admission, outcome: Outcome) -> None:
    try:
        await settle(state, admission, outcome)
    except Exception:  # noqa: BLE001 - a background settlement must not fail silently
        log.exception("request %s: settlement failed", admission.request_id)
