"""Admin REST API: keys, usage, channels, reload. Bearer admin key on every route."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.admin.key_service import KeyService
from sluice.admin.schemas import parse_time
from sluice.errors import AuthenticationFailed, InvalidRequest, NotFound, ServiceUnavailable
from sluice.health_probe import probe_channel, probe_model
from sluice.keys import KeyRecord
from sluice.relay.http import client_ip, json_response, read_json_body
from sluice.settings import ConfigError, load_settings
from sluice.state import AppState
from sluice.storage.usage_queries import UsageFilter

__all__ = ["admin_routes", "channel_view", "key_service", "mask_secret", "require_admin"]


def mask_secret(secret: str) -> str:
    if not secret:
        return ""
    if len(secret) <= 8:
        return "****"
    return f"{secret[:3]}…{secret[-2:]}"


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.sluice
    return state


def require_admin(request: Request) -> AppState:
    state = _state(request)
    # A throttled address is refused before its key is even compared, the right key too:
    # otherwise the 429s would still tell a guesser which guess was right.
    address = client_ip(request)
    state.admin_throttle.check(address)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("Admin routes need 'Authorization: Bearer <admin key>'.")
    # Digests of equal length compared in constant time: the time taken says nothing of
    # how much of a guess was right.
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    if not hmac.compare_digest(digest, state.admin_key_hash):
        state.admin_throttle.record_failure(address)
        raise AuthenticationFailed("Incorrect admin key.", code="invalid_admin_key")
    return state


def key_service(state: AppState) -> KeyService:
    async def announce(record: KeyRecord, spend_dropped: bool) -> None:
        if spend_dropped:  # spend reset or key deleted: counters reseed from the database
            await state.usage_sink.flush()
            await state.ledger.forget(record.id)
        await state.key_changed(record)  # this cache, and every replica's when Redis is set

    return KeyService(state.keys, announce)


async def _raw_body(request: Request) -> object:
    raw, _ = await read_json_body(request, 1024 * 1024, 16)
    return raw


async def _key_or_404(state: AppState, key_id: str) -> KeyRecord:
    return await key_service(state).find(key_id)


async def _view(state: AppState, record: KeyRecord) -> dict[str, Any]:
    view = record.public_view()
    view["spent_usd"] = await state.ledger.spent(record.id, record.spent_micro) / 1_000_000
    return view


async def create_key(request: Request) -> Response:
    state = require_admin(request)
    new = await key_service(state).create(await _raw_body(request))
    return json_response({"key": new.secret, **new.record.public_view()}, status=201)


async def list_keys(request: Request) -> Response:
    state = require_admin(request)
    records = await key_service(state).list()
    return json_response({"object": "list", "data": [await _view(state, r) for r in records]})


async def get_key(request: Request) -> Response:
    state = require_admin(request)
    record = await key_service(state).find(request.path_params["key_id"])
    return json_response(await _view(state, record))


async def update_key(request: Request) -> Response:
    state = require_admin(request)
    keys = key_service(state)
    ident = request.path_params["key_id"]
    await keys.find(ident)  # an unknown key is 404 before its body is read
    updated = await keys.update(ident, await _raw_body(request))
    return json_response(await _view(state, updated))


async def disable_key(request: Request) -> Response:
    state = require_admin(request)
    updated = await key_service(state).set_disabled(request.path_params["key_id"], True)
    return json_response(await _view(state, updated))


async def enable_key(request: Request) -> Response:
    state = require_admin(request)
    updated = await key_service(state).set_disabled(request.path_params["key_id"], False)
    return json_response(await _view(state, updated))


async def delete_key(request: Request) -> Response:
    state = require_admin(request)
    record = await key_service(state).delete(request.path_params["key_id"])
    return json_response({"id": record.id, "object": "key", "deleted": True})


def _query_time(request: Request, name: str) -> float | None:
    try:
        return parse_time(request.query_params.get(name))
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=name) from None


async def usage_report(request: Request) -> Response:
    state = require_admin(request)
    params = request.query_params
    group_by = params.get("group_by") or params.get("by")
    if group_by not in (None, "day", "model", "key", "channel"):
        raise InvalidRequest(
            "Invalid 'group_by': expected day, model, key or channel.", param="group_by"
        )
    key_id = params.get("key")
    if key_id:
        key_id = (await _key_or_404(state, key_id)).id
    where = UsageFilter(
        key_id=key_id or None,
        model=params.get("model") or None,
        channel=params.get("channel") or None,
        since=_query_time(request, "since"),
        until=_query_time(request, "until"),
    )
    await state.usage_sink.flush()
    rows = await state.usage.summary(where, group_by)  # type: ignore[arg-type]
    return json_response({"object": "list", "group_by": group_by, "data": rows})


def channel_view(state: AppState, name: str) -> dict[str, Any]:
    config = next(c for c in state.all_channels() if c.name == name)
    routed = {c.name for c in state.router.channels}
    runtime = {c.name for c in state.runtime_channels}
    status = "active" if name in routed else ("disabled" if not config.enabled else "unavailable")
    return {
        "name": config.name,
        "type": config.type,
        "base_url": config.base_url,
        "api_key": mask_secret(config.api_key.get_secret_value()),
        "models": config.models,
        "model_map": config.model_map,
        "priority": config.priority,
        "weight": config.weight,
        "enabled": config.enabled,
        "source": "runtime" if name in runtime else "config",
        "status": status,
        "health": state.health_snapshot(name),
    }


async def list_channels(request: Request) -> Response:
    state = require_admin(request)
    data = [channel_view(state, c.name) for c in state.all_channels()]
    return json_response({"object": "list", "data": data})


async def test_channel(request: Request) -> Response:
    """Send a one-token chat request straight to the channel and report how it went."""
    state = require_admin(request)
    name = request.path_params["name"]
    channel = next((c for c in state.router.channels if c.name == name), None)
    if channel is None:
        raise NotFound(f"No active channel named '{name}'.", code="channel_not_found")
    model = request.query_params.get("model") or probe_model(channel)
    if model is None:
        raise InvalidRequest("Pass ?model=NAME: the channel lists only patterns.", param="model")
    return json_response(await probe_channel(state, channel, model))


async def enable_channel(request: Request) -> Response:
    """Re-enable a channel disabled by the health tracker (dead key, no credit) or reset its
    circuit breakers. Channels disabled in the config file need a config change instead."""
    state = require_admin(request)
    name = request.path_params["name"]
    if not any(c.name == name for c in state.all_channels()):
        raise NotFound(f"No channel named '{name}'.", code="channel_not_found")
    was_disabled = state.health.enable(name)
    return json_response({**channel_view(state, name), "was_disabled": was_disabled})


async def reload_config(request: Request) -> Response:
    state = require_admin(request)
    path = state.settings.source_path
    if path is None:
        raise InvalidRequest(
            "The gateway runs on the embedded default: there is no file to reload."
        )
    try:
        settings = load_settings(Path(path))
    except ConfigError as exc:
        raise InvalidRequest(f"Reload refused, the running config is unchanged: {exc}") from None
    if settings.database_url != state.settings.database_url:
        raise ServiceUnavailable("database_url changed: restart the gateway to apply it.")
    state.apply_settings(settings)
    return json_response({"reloaded": True, "channels": [c.name for c in state.router.channels]})


def admin_routes() -> list[Route]:
    return [
        Route("/admin/keys", create_key, methods=["POST"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}", get_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", update_key, methods=["PATCH", "POST"]),
        Route("/admin/keys/{key_id}", delete_key, methods=["DELETE"]),
        Route("/admin/keys/{key_id}/disable", disable_key, methods=["POST"]),
        Route("/admin/keys/{key_id}/enable", enable_key, methods=["POST"]),
        Route("/admin/usage", usage_report, methods=["GET"]),
        Route("/admin/channels", list_channels, methods=["GET"]),
        Route("/admin/channels/{name}/test", test_channel, methods=["POST"]),
        Route("/admin/channels/{name}/enable", enable_channel, methods=["POST"]),
        Route("/admin/reload", reload_config, methods=["POST"]),
    ]
