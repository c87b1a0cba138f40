"""Channel probes: the tiny request ``POST /admin/channels/{name}/test`` sends, the confirmation
of a 401/402/403 before a channel is disabled, and the background task that probes disabled
channels and re-enables those that answer again."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from sluice.channel_call import ChannelFailed, open_channel
from sluice.core import FailureKind, RelayCall, UpstreamFailure
from sluice.health import DEAD_CHANNEL_KINDS
from sluice.routing import Channel
from sluice.state import AppState
from sluice.upstream import read_body

__all__ = [
    "confirm_soon",
    "probe_channel",
    "probe_model",
    "probe_disabled_channels",
    "run_probe_loop",
]

log = logging.getLogger("sluice.health")


def probe_model(channel: Channel) -> str | None:
    """The channel's ``test_model``, else a concrete model name it serves (patterns cannot be
    sent)."""
    config = channel.config
    if config.test_model:
        return config.test_model
    return next((m for m in [*config.model_map, *config.models] if not any(c in m for c in "*?[")),
                None)  # fmt: skip


async def probe_channel(state: AppState, channel: Channel, model: str) -> dict[str, Any]:
    """Send the smallest request (a one-token chat) straight to the channel; report, never
    raise."""
    outcome, _kind = await _probe(state, channel, model)
    return outcome


async def _probe(
    state: AppState, channel: Channel, model: str
) -> tuple[dict[str, Any], FailureKind | None]:
    """The probe's report and, when it failed, the failure's kind (None for a success or an
    error that is not an upstream answer, such as a timeout)."""
    outcome: dict[str, Any] = {"channel": channel.name, "model": model}
    # Chat for every channel that serves it (the first spec with a probe); a rerank-only
    # channel is probed with a rerank of one document.
    spec = next(
        (s for s in state.endpoints if s.probe_body and channel.config.serves_endpoint(s)), None
    )
    if spec is None or spec.probe_body is None:
        outcome.update(ok=False, status=None, error="no endpoint to probe", latency_ms=0.0)
        return outcome, None
    body = spec.probe_body(model)
    call = RelayCall(
        endpoint=spec.name,
        path=spec.upstream_path,
        body=body,
        raw_body=orjson.dumps(body),
        requested_model=model,
        upstream_model=channel.config.upstream_model(model),
        stream=False,
        client_wants_usage=False,
    )
    started = time.perf_counter()
    kind: FailureKind | None = None
    try:
        response = await open_channel(state, channel, call)
        try:
            payload = await read_body(response, state.settings.limits.max_upstream_body_bytes)
        finally:
            response.close()  # a probe is rare: no need to keep the connection
        channel.adapter.parse_response(call, payload)
        outcome.update(ok=True, status=response.status)
    except ChannelFailed as exc:
        failure = exc.failure
        status = failure.status if exc.answered else None  # None: no answer (e.g. a timeout)
        kind = failure.kind if exc.answered else None
        outcome.update(ok=False, status=status, error=failure.message)
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        outcome.update(ok=False, status=None, error=type(exc).__name__)
    outcome["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return outcome, kind


def confirm_soon(state: AppState, channel: Channel, failure: UpstreamFailure) -> None:
    """A client's request got an auth/billing answer from ``channel``: check, in the background,
    whether the channel's own test request fails the same way before disabling it.

    The answer may belong to the request only (OpenAI answers 403 for a model the key's project
    lacks; some providers 402 for a huge ``max_tokens``), and the channel is shared by every
    tenant. One probe at a time per channel, and at most one per ``circuit.confirm_interval_s``.
    """
    name = channel.name
    if name in state.health.disabled_channels():
        return
    model = probe_model(channel)
    if model is None:
        log.warning(
            "channel %s answered HTTP %s (%s) but has no concrete model to probe (set its "
            "test_model): it stays enabled",
            name,
            failure.upstream_status,
            failure.kind,
        )
        return
    if state.probe_gate.begin(name, state.settings.circuit.confirm_interval_s):
        state.spawn(_confirm(state, channel, model, failure))


async def _confirm(state: AppState, channel: Channel, model: str, failure: UpstreamFailure) -> None:
    try:
        outcome, kind = await _probe(state, channel, model)
    finally:
        state.probe_gate.end(channel.name)
    if kind in DEAD_CHANNEL_KINDS:
        reason = f"upstream {kind} failure, confirmed by a health probe"
        state.health.disable(channel.name, reason)
        log.warning("channel %s disabled: its health probe failed too (%s)", channel.name, kind)
    else:
        log.info(
            "channel %s answered a request with HTTP %s (%s) but its health probe did not fail "
            "that way (%s): it stays enabled",
            channel.name,
            failure.upstream_status,
            failure.kind,
            "ok" if outcome.get("ok") else outcome.get("error"),
        )


async def probe_disabled_channels(state: AppState) -> list[str]:
    """Probe every disabled channel once; re-enable and return those that answered."""
    enabled: list[str] = []
    routed = {c.name: c for c in state.router.channels}
    for name in state.health.disabled_channels():
        channel = routed.get(name)
        model = probe_model(channel) if channel is not None else None
        if channel is None or model is None:
            continue
        outcome = await probe_channel(state, channel, model)
        if outcome.get("ok"):
            state.health.enable(name)
            enabled.append(name)
            log.warning("channel %s answered its health probe: re-enabled", name)
    return enabled


async def run_probe_loop(state: AppState) -> None:
    """Lifespan task: every ``circuit.probe_interval_s`` (re-read, so reloads apply)."""
    while True:
        interval = state.settings.circuit.probe_interval_s
        await asyncio.sleep(interval if interval > 0 else 5.0)
        if interval <= 0:
            continue
        try:
            await probe_disabled_channels(state)
        except Exception:  # noqa: BLE001 - the loop must survive a bad probe
            log.exception("health probe round failed")
