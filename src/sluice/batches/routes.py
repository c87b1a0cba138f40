"""``/v1/batches``: create, retrieve, cancel, list. A batch is visible only to its key."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.batches.services import services_of
from sluice.batches.store import BatchRecord, new_batch_id
from sluice.errors import InvalidRequest, NotFound
from sluice.files.routes import file_not_found, list_params
from sluice.relay.admission import FULL_PRICE_PPM, authenticate
from sluice.relay.http import json_response, read_json_body
from sluice.state import AppState

__all__ = ["batch_routes"]

_WINDOWS = {"24h": 24 * 3600.0}
_METADATA_PAIRS = 16


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.sluice
    return state


def _batch_not_found(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id}'.", param="batch_id", code="not_found")


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    valid = (
        isinstance(value, dict)
        and len(value) <= _METADATA_PAIRS
        and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in value.items()
        )
    )
    if not valid:
        raise InvalidRequest(
            "Invalid 'metadata': up to 16 string pairs (keys up to 64 characters, values up "
            "to 512).",
            param="metadata",
        )
    return dict(value)


async def create_batch(request: Request) -> Response:
    state = _state(request)
    services = services_of(request)
    key = await authenticate(state, request)
    limits = state.settings.limits
    body, _ = await read_json_body(request, limits.max_body_bytes, limits.max_json_depth)
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest("'input_file_id' is required.", param="input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in services.urls:
        raise InvalidRequest(
            f"Invalid 'endpoint': expected one of {', '.join(sorted(services.urls))}.",
            param="endpoint",
            code="invalid_endpoint",
        )
    window = body.get("completion_window")
    if window not in _WINDOWS:
        raise InvalidRequest(
            "Invalid 'completion_window': expected '24h'.", param="completion_window"
        )
    metadata = _metadata(body.get("metadata"))
    source = await services.files.get(file_id, key.id)
    if source is None:
        raise file_not_found(file_id)
    if source.purpose != "batch" or source.line_count is None:
        raise InvalidRequest(
            f"The file {file_id} was not uploaded with purpose 'batch'.", param="input_file_id"
        )
    mismatched = [url for url in source.urls if url != endpoint]
    if mismatched:
        raise InvalidRequest(
            f"The file's lines use the url '{mismatched[0]}', but the batch's endpoint is "
            f"'{endpoint}': every line must use the batch's endpoint.",
            param="endpoint",
            code="mismatched_endpoint",
        )
    now = time.time()
    discount = state.settings.batches.discount
    record = BatchRecord(
        id=new_batch_id(),
        key_id=key.id,
        endpoint=str(endpoint),
        input_file_id=file_id,
        completion_window=str(window),
        status="validating",
        price_ppm=round(FULL_PRICE_PPM * (1 - discount)),
        created_at=now,
        expires_at=now + _WINDOWS[str(window)],
        metadata=metadata,
        total=source.line_count,
    )
    await services.batches.add(record)
    if services.runner is not None:
        services.runner.wake()
    return json_response(record.public())


async def retrieve_batch(request: Request) -> Response:
    state = _state(request)
    services = services_of(request)
    key = await authenticate(state, request)
    batch_id = request.path_params["batch_id"]
    record = await services.batches.get(batch_id, key.id)
    if record is None:
        raise _batch_not_found(batch_id)
    return json_response(record.public())


async def cancel_batch(request: Request) -> Response:
    state = _state(request)
    services = services_of(request)
    key = await authenticate(state, request)
    batch_id = request.path_params["batch_id"]
    record = await services.batches.request_cancel(batch_id, key.id, time.time())
    if record is None:
        raise _batch_not_found(batch_id)
    if record.status in ("completed", "failed", "expired"):
        raise InvalidRequest(
            f"The batch is already {record.status} and cannot be cancelled.",
            param="batch_id",
            code="batch_not_cancellable",
            status=409,
        )
    if services.runner is not None:
        services.runner.cancel_local(batch_id)
    return json_response(record.public())


async def list_batches(request: Request) -> Response:
    state = _state(request)
    services = services_of(request)
    key = await authenticate(state, request)
    after, limit = list_params(request, 100)
    records, more = await services.batches.page(key.id, after, limit)
    data = [r.public() for r in records]
    page: dict[str, Any] = {"object": "list", "data": data, "has_more": more}
    if data:
        page["first_id"], page["last_id"] = data[0]["id"], data[-1]["id"]
    return json_response(page)


def batch_routes() -> list[Route]:
    return [
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    ]
