"""Channel probes: the tiny request ``POST /admin/channels/{name}/test`` sends, and the
background task that probes disabled channels and re-enables those that answer again."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from sluice.providers.base import RelayCall
from sluice.routing import Channel
from sluice.state import AppState

__all__ = ["probe_channel", "probe_model", "probe_disabled_channels", "run_probe_loop"]

log = logging.getLogger("sluice.health")


def probe_model(channel: Channel) -> str | None:
    """A concrete model name the channel serves (patterns cannot be sent)."""
    config = channel.config
    return next((m for m in [*config.model_map, *config.models] if not any(c in m for c in "*?[")),
                None)  # fmt: skip


async def probe_channel(state: AppState, channel: Channel, model: str) -> dict[str, Any]:
    """Send a one-token chat request straight to the channel; report, never raise."""
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    call = RelayCall(
        endpoint="chat",
        body=body,
        raw_body=orjson.dumps(body),
        requested_model=model,
        upstream_model=channel.config.upstream_model(model),
        stream=False,
        client_wants_usage=False,
    )
    started = time.perf_counter()
    outcome: dict[str, Any] = {"channel": channel.name, "model": model}
    try:
        response = await state.upstream.open(
            channel.adapter.build_request(call, channel.config), state.timeouts_for(channel.config)
        )
        payload = await response.read()
        response.release()
        if response.status >= 400:
            secret = channel.config.api_key.get_secret_value()
            failure = channel.adapter.parse_error(
                response.status, response.headers, payload, secret
            )
            outcome.update(ok=False, status=failure.status, error=failure.message)
        else:
            channel.adapter.parse_response(call, payload)
            outcome.update(ok=True, status=response.status)
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        message = getattr(getattr(exc, "failure", None), "message", None) or type(exc).__name__
        outcome.update(ok=False, status=None, error=message)
    outcome["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return outcome


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
