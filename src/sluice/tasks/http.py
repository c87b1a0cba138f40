"""What every task route does first: find the service, authenticate the key, read the body."""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, Request

from sluice.auth import check_key, extract_key
from sluice.errors import (
    ClientClosedRequest,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
)
from sluice.keys import KeyRecord
from sluice.relay.http import client_ip, read_json_body
from sluice.tasks.service import TaskService

__all__ = ["authenticate", "base_url_of", "read_object", "read_raw", "service_of"]


def service_of(request: Request) -> TaskService:
    service: TaskService | None = getattr(request.app.state, "sluice_tasks", None)
    if service is None:
        raise ServiceUnavailable("The tasks service is starting; retry shortly.")
    return service


async def authenticate(service: TaskService, request: Request) -> KeyRecord:
    """The same sk- keys as every route: ``Authorization: Bearer``, or midjourney-proxy's
    ``mj-api-secret`` header (or ``x-api-key`` / ``api-key``)."""
    headers = request.headers
    secret = extract_key(
        headers.get("authorization"),
        headers.get("mj-api-secret") or headers.get("x-api-key") or headers.get("api-key"),
    )
    address = client_ip(request)
    record = await service.state.key_cache.lookup(secret, address)
    check_key(record, address)
    return record


async def read_object(service: TaskService, request: Request) -> dict[str, Any]:
    limits = service.state.settings.limits
    body, _ = await read_json_body(
        request, limits.max_body_bytes, limits.max_json_depth, service.state.offload
    )
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def base_url_of(service: TaskService, request: Request) -> str:
    """Sluice's address for links in answers: the configured public URL, else the request's."""
    public = service.config.public_url
    return (public or str(request.base_url)).rstrip("/")


async def read_raw(request: Request, max_bytes: int) -> bytes:
    """The body as received, refused past ``max_bytes`` (413) before more is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body exceeds the limit of {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"The request body exceeds the limit of {max_bytes} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosedRequest("The client closed the connection mid-request.") from None
    return b"".join(chunks)
