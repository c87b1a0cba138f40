"""Admin API for runtime channels: ``POST /admin/channels``, ``PATCH``/``DELETE
/admin/channels/{name}``, and ``POST /admin/channels/{name}/disable``.

Bodies are channels as in the config file (docs/config.md); the upstream key is stored
encrypted and every answer shows it masked. Channels of the config file are read-only here.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.admin.api import channel_view, require_admin
from sluice.errors import InvalidRequest, NotFound, ServiceUnavailable
from sluice.relay.http import json_response, read_json_body
from sluice.runtime_channels import RuntimeChannels
from sluice.state import AppState

__all__ = ["channels_api_routes", "channel_service"]

_MAX_BODY = 256 * 1024


def channel_service(state: AppState) -> RuntimeChannels:
    if state.channel_service is None:
        raise ServiceUnavailable("Runtime channels are not available on this server.")
    return state.channel_service


async def _body(request: Request) -> object:
    raw, _ = await read_json_body(request, _MAX_BODY, 16)
    return raw


async def create_channel(request: Request) -> Response:
    state = require_admin(request)
    config = await channel_service(state).create(await _body(request))
    return json_response(channel_view(state, config.name), status=201)


async def update_channel(request: Request) -> Response:
    state = require_admin(request)
    config = await channel_service(state).update(request.path_params["name"], await _body(request))
    return json_response(channel_view(state, config.name))


async def delete_channel(request: Request) -> Response:
    state = require_admin(request)
    name = request.path_params["name"]
    await channel_service(state).delete(name)
    return json_response({"name": name, "object": "channel", "deleted": True})


async def disable_channel(request: Request) -> Response:
    """Take a channel (config file or runtime) out of routing until enabled again."""
    state = require_admin(request)
    name = request.path_params["name"]
    if not any(c.name == name for c in state.all_channels()):
        raise NotFound(f"No channel named '{name}'.", code="channel_not_found")
    reason = request.query_params.get("reason") or "disabled by an operator"
    if len(reason) > 200:
        raise InvalidRequest("Invalid 'reason': at most 200 characters.", param="reason")
    state.health.disable(name, reason)
    return json_response(channel_view(state, name))


def channels_api_routes() -> list[Route]:
    return [
        Route("/admin/channels", create_channel, methods=["POST"]),
        Route("/admin/channels/{name}", update_channel, methods=["PATCH"]),
        Route("/admin/channels/{name}", delete_channel, methods=["DELETE"]),
        Route("/admin/channels/{name}/disable", disable_channel, methods=["POST"]),
    ]
