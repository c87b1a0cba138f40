"""Admin API for usage as people read it: daily series, filtered pages of rows, CSV export.

``GET /admin/usage/series``, ``GET /admin/usage/rows``, ``GET /admin/usage/export.csv``; the
same filters on each (``key``, ``model``, ``channel``, ``status``, ``since``, ``until``), see
docs/admin-api.md. The console reads through the same functions.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sluice.admin.api import require_admin
from sluice.admin.schemas import parse_time
from sluice.errors import InvalidRequest, NotFound
from sluice.relay.http import json_response
from sluice.state import AppState
from sluice.storage.usage_browse import (
    ROW_COLUMNS,
    Dimension,
    RowFilter,
    UsageBrowser,
    valid_status,
)
from sluice.storage.usage_queries import UsageFilter

__all__ = [
    "usage_api_routes", "row_filter", "parse_dimension", "parse_page", "parse_time_param",
    "MAX_PAGE",
]  # fmt: skip

MAX_PAGE = 500


def parse_time_param(params: Mapping[str, str], name: str) -> float | None:
    try:
        return parse_time(params.get(name) or None)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=name) from None


async def row_filter(state: AppState, params: Mapping[str, str]) -> RowFilter:
    """The filters of a query string; ``key`` may be an id, prefix or name (404 if none)."""
    key = params.get("key") or None
    if key is not None:
        record = await state.keys.find(key)
        if record is None:
            message = f"There is no key with id, prefix or name '{key}'."
            raise NotFound(message, code="key_not_found")
        key = record.id
    status = params.get("status") or None
    if not valid_status(status):
        raise InvalidRequest(
            "Invalid 'status': expected ok, error or an HTTP status code.", param="status"
        )
    where = UsageFilter(
        key_id=key,
        model=params.get("model") or None,
        channel=params.get("channel") or None,
        since=parse_time_param(params, "since"),
        until=parse_time_param(params, "until"),
    )
    return RowFilter(where, status)


def parse_dimension(value: str | None) -> Dimension | None:
    if value in (None, "", "day"):
        return None
    if value in ("model", "key", "channel"):
        return value  # type: ignore[return-value]
    raise InvalidRequest("Invalid 'by': expected model, key or channel.", param="by")


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"Invalid '{name}': expected an integer.", param=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"Invalid '{name}': expected {low} to {high}.", param=name)
    return value


def parse_page(params: Mapping[str, str], default_limit: int = 50) -> tuple[int, int]:
    limit = _int(params, "limit", default_limit, 1, MAX_PAGE)
    offset = _int(params, "offset", 0, 0, 10**9)
    return limit, offset


async def usage_series(request: Request) -> Response:
    state = require_admin(request)
    where = await row_filter(state, request.query_params)
    by = parse_dimension(request.query_params.get("by"))
    await state.usage_sink.flush()
    data = await UsageBrowser(state.engine).series(where, by)
    return json_response({"object": "list", "by": by, "data": data})


async def usage_rows(request: Request) -> Response:
    state = require_admin(request)
    where = await row_filter(state, request.query_params)
    limit, offset = parse_page(request.query_params)
    await state.usage_sink.flush()
    rows, total = await UsageBrowser(state.engine).page(where, limit, offset)
    body: dict[str, Any] = {
        "object": "list",
        "data": rows,
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": offset + len(rows) < total,
    }
    return json_response(body)


def csv_response(state: AppState, where: RowFilter, filename: str) -> Response:
    browser = UsageBrowser(state.engine)

    async def lines() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(ROW_COLUMNS)
        async for batch in browser.batches(where):
            writer.writerows(batch)
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue().encode()

    headers = {"content-disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)


async def usage_export(request: Request) -> Response:
    state = require_admin(request)
    where = await row_filter(state, request.query_params)
    await state.usage_sink.flush()
    return csv_response(state, where, "sluice-usage.csv")


def usage_api_routes() -> list[Route]:
    return [
        Route("/admin/usage/series", usage_series, methods=["GET"]),
        Route("/admin/usage/rows", usage_rows, methods=["GET"]),
        Route("/admin/usage/export.csv", usage_export, methods=["GET"]),
    ]
