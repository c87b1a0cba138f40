"""OpenAI-compatible relay endpoints and the read-only endpoints a key may call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.endpoints.spec import EndpointRegistry, EndpointSpec
from sluice.errors import InvalidRequest, PermissionDenied
from sluice.relay.admission import authenticate
from sluice.relay.engine import relay
from sluice.relay.http import json_response
from sluice.relay.model_access import check_model, model_not_found
from sluice.state import AppState
from sluice.storage.usage_queries import UsageFilter

__all__ = ["relay_routes"]

_UNLIMITED_USD = 100_000_000


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.sluice
    return state


def _relay_handler(spec: EndpointSpec) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        return await relay(_state(request), request, spec)

    # The access log's and metrics' route label: the OpenAI path ("chat_completions").
    handle.__name__ = spec.upstream_path.strip("/").replace("/", "_")
    return handle


def _model_object(model_id: str, owner: str, created: int) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


async def list_models(request: Request) -> Response:
    state = _state(request)
    key = await authenticate(state, request)
    created = int(state.started_at)
    data = [
        _model_object(model_id, owner, created)
        for model_id, owner in sorted(state.router.listed_models().items())
        if key.allows_model(model_id)
    ]
    return json_response({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    state = _state(request)
    key = await authenticate(state, request)
    model_id = request.path_params["model_id"]
    try:
        check_model(state.router, key, model_id)
    except PermissionDenied:
        # Like the listing, a retrieval does not show a key the models it may not use.
        raise model_not_found(model_id) from None
    owner = state.router.listed_models().get(model_id)
    if owner is None:  # served through a glob: the first channel that serves it owns it
        owner = state.router.candidates(model_id)[0].config.type
    return json_response(_model_object(model_id, owner, int(state.started_at)))


async def billing_subscription(request: Request) -> Response:
    state = _state(request)
    key = await authenticate(state, request)
    limit = _UNLIMITED_USD if key.budget_micro is None else key.budget_micro / 1_000_000
    return json_response(
        {
            "object": "billing_subscription",
            "has_payment_method": True,
            "soft_limit_usd": limit,
            "hard_limit_usd": limit,
            "system_hard_limit_usd": limit,
            "access_until": int(key.expires_at) if key.expires_at is not None else 0,
        }
    )


def _parse_date(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"Invalid '{name}': expected a date as YYYY-MM-DD.", param=name, code="invalid_date"
        ) from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


async def billing_usage(request: Request) -> Response:
    """Cents spent by the key in [start_date, end_date) (UTC days; end date exclusive)."""
    state = _state(request)
    key = await authenticate(state, request)
    since = _parse_date(request, "start_date")
    until = _parse_date(request, "end_date")
    if since is not None and until is not None and until < since:
        raise InvalidRequest("Invalid date range: end_date is before start_date.", param="end_date")
    await state.usage_sink.flush()
    micro = await state.usage.cost_micro(UsageFilter(key_id=key.id, since=since, until=until))
    return json_response({"object": "list", "total_usage": micro / 10_000})


def relay_routes(endpoints: EndpointRegistry) -> list[Route]:
    routes = [
        Route(path, _relay_handler(spec), methods=["POST"])
        for spec in endpoints
        for path in spec.paths
    ]
    routes += [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    ]
    for prefix in ("", "/v1"):
        routes.append(
            Route(f"{prefix}/dashboard/billing/subscription", billing_subscription, methods=["GET"])
        )
        routes.append(Route(f"{prefix}/dashboard/billing/usage", billing_usage, methods=["GET"]))
    return routes
