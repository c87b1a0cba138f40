"""Routes every task protocol shares: the upstream's callbacks to Sluice, proxied result
content (streamed), and the key's callback signing secret."""

from __future__ import annotations

import hmac

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sluice.errors import NotFound, ServiceUnavailable
from sluice.relay.http import json_response, read_json_body
from sluice.tasks.callbacks import SIGNATURE_HEADER, callback_secret
from sluice.tasks.http import authenticate, service_of
from sluice.tasks.protocol import content_signature

__all__ = ["common_routes"]

_CHUNK = 64 * 1024
_PASSED_HEADERS = ("content-type", "content-length", "cache-control", "etag", "last-modified")


def _task_not_found() -> NotFound:
    return NotFound("No such task.", code="task_not_found")


async def upstream_callback(request: Request) -> Response:
    """An upstream's progress report: its task object, at the URL Sluice gave it (a per-task
    secret in the path; a wrong one is indistinguishable from an unknown task)."""
    service = service_of(request)
    row = await service.store.get(request.path_params["task_id"])
    secret = request.path_params["secret"]
    if row is None or not hmac.compare_digest(secret.encode(), row.callback_secret.encode()):
        raise _task_not_found()
    limits = service.state.settings.limits
    _, body = await read_json_body(request, limits.max_body_bytes, limits.max_json_depth)
    if not row.final:
        snapshot = service.protocols[row.kind].parse_callback(row, body)
        if snapshot is not None:
            await service.observe(row, snapshot)
    return json_response({"ok": True})


async def content(request: Request) -> Response:
    """A proxied result (image, audio), streamed from the upstream: never held whole."""
    service = service_of(request)
    task_id = request.path_params["task_id"]
    index = request.path_params["index"]
    expected = content_signature(service.secret, task_id, index)
    if not hmac.compare_digest(request.query_params.get("sig", "").encode(), expected.encode()):
        raise _task_not_found()
    row = await service.store.get(task_id)
    if row is None:
        raise _task_not_found()
    protocol = service.protocols[row.kind]
    urls = protocol.result_urls(row)
    channel = service.channel(row.channel)
    if index >= len(urls) or not urls[index] or channel is None:
        raise _task_not_found()
    headers = dict(protocol.upstream_headers(channel.config))
    return await stream_from(service.state.session, urls[index], headers)


async def stream_from(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> StreamingResponse:
    """Open ``url`` and hand its body to the client as it arrives, chunk by chunk."""
    try:
        upstream = await session.get(
            url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        )
    except (aiohttp.ClientError, OSError, TimeoutError):
        raise ServiceUnavailable("The result could not be fetched from the upstream.") from None
    if upstream.status != 200:
        upstream.close()
        raise ServiceUnavailable(
            f"The upstream answered HTTP {upstream.status} for the result.",
            code="upstream_error",
        )

    async def body() -> object:
        try:
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                yield chunk
        finally:
            upstream.close()

    passed = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_HEADERS}
    if "content-encoding" in upstream.headers:  # the session decodes it: the length changes
        passed = {k: v for k, v in passed.items() if k.lower() != "content-length"}
    return StreamingResponse(body(), headers=passed)  # type: ignore[arg-type]


async def signing_secret(request: Request) -> Response:
    """The key's secret for verifying callbacks: ``X-Sluice-Signature: sha256=<hex>`` is
    HMAC-SHA256(secret, body)."""
    service = service_of(request)
    key = await authenticate(service, request)
    secret = callback_secret(service.secret, key.id)
    return json_response({"secret": secret, "header": SIGNATURE_HEADER, "algorithm": "sha256"})


def common_routes() -> list[Route]:
    return [
        Route("/tasks/callback/{task_id}/{secret}", upstream_callback, methods=["POST"]),
        Route("/tasks/{task_id}/content/{index:int}", content, methods=["GET"]),
        Route("/tasks/callback-secret", signing_secret, methods=["GET"]),
    ]
