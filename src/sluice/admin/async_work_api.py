"""Admin API for asynchronous work: ``GET /admin/tasks`` and ``GET /admin/batches``, filtered
and paged, newest first (docs/admin-api.md). The console reads through the same functions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.admin.api import require_admin
from sluice.admin.usage_api import parse_page, parse_time_param
from sluice.errors import InvalidRequest, NotFound
from sluice.relay.http import json_response
from sluice.state import AppState
from sluice.storage.batch_browse import BATCH_STATUSES, BatchBrowser, BatchFilter
from sluice.storage.task_browse import TASK_KINDS, TASK_STATES, TaskBrowser, TaskFilter

__all__ = ["async_work_api_routes", "task_filter", "batch_filter"]


async def _key_id(state: AppState, params: Mapping[str, str]) -> str | None:
    key = params.get("key") or None
    if key is None:
        return None
    record = await state.keys.find(key)
    if record is None:
        message = f"There is no key with id, prefix or name '{key}'."
        raise NotFound(message, code="key_not_found")
    return record.id


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = params.get(name) or None
    if value is not None and value not in choices:
        raise InvalidRequest(f"Invalid '{name}': expected one of {', '.join(choices)}.", param=name)
    return value


async def task_filter(state: AppState, params: Mapping[str, str]) -> TaskFilter:
    """The filters of a query string; ``key`` may be an id, prefix or name (404 if none)."""
    return TaskFilter(
        key_id=await _key_id(state, params),
        kind=_choice(params, "kind", TASK_KINDS),
        state=_choice(params, "state", TASK_STATES),
        since=parse_time_param(params, "since"),
        until=parse_time_param(params, "until"),
    )


async def batch_filter(state: AppState, params: Mapping[str, str]) -> BatchFilter:
    return BatchFilter(
        key_id=await _key_id(state, params),
        status=_choice(params, "status", BATCH_STATUSES),
    )


def _page_body(rows: list[dict[str, Any]], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"object": "list", "data": rows, "total": total, "limit": limit, "offset": offset,
            "has_more": offset + len(rows) < total}  # fmt: skip


async def list_tasks(request: Request) -> Response:
    state = require_admin(request)
    where = await task_filter(state, request.query_params)
    limit, offset = parse_page(request.query_params)
    rows, total = await TaskBrowser(state.engine).page(where, limit, offset)
    return json_response(_page_body(rows, total, limit, offset))


async def list_batches(request: Request) -> Response:
    state = require_admin(request)
    where = await batch_filter(state, request.query_params)
    limit, offset = parse_page(request.query_params)
    await state.usage_sink.flush()  # the cost so far counts the lines just ended
    rows, total = await BatchBrowser(state.engine).page(where, limit, offset)
    return json_response(_page_body(rows, total, limit, offset))


def async_work_api_routes() -> list[Route]:
    return [
        Route("/admin/tasks", list_tasks, methods=["GET"]),
        Route("/admin/batches", list_batches, methods=["GET"]),
    ]
