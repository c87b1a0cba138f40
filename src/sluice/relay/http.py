"""Small HTTP helpers shared by handlers: bodies, JSON responses, request ids, client IPs."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from sluice.errors import (
    ClientClosedRequest,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from sluice.offload import Offload
from sluice.server_protocol import body_timed_out

__all__ = [
    "read_json_body",
    "json_response",
    "request_id_of",
    "client_ip",
    "JSON_TYPE",
    "REQUEST_ID_PATTERN",
]

JSON_TYPE = "application/json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
REQUEST_ID_PATTERN = _REQUEST_ID  # the access-log middleware assigns ids by the same rule


def request_id_of(request: Request) -> str:
    cached = request.scope.get("sluice.request_id")
    if isinstance(cached, str):
        return cached
    supplied = request.headers.get("x-request-id")
    rid = supplied if supplied and _REQUEST_ID.match(supplied) else f"req_{uuid.uuid4().hex}"
    request.scope["sluice.request_id"] = rid
    return rid


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _check_depth(value: Any, limit: int) -> None:
    # Level by level: the only objects that outlive an iteration are the level lists. A stack
    # of (item, depth) tuples kept thousands alive at once for a long message list, and those
    # allocations set off garbage collections (full ones in a large heap) under the GIL.
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 1
    while level:
        if depth > limit:
            raise InvalidRequest(
                f"The JSON body is nested more than {limit} levels deep.", code="invalid_json"
            )
        deeper: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            deeper += [v for v in children if isinstance(v, (dict, list))]
        level = deeper
        depth += 1


def _may_be_deep(raw: bytes, limit: int) -> bool:
    # Nesting deeper than ``limit`` needs more than ``limit`` brackets: counting bytes in C is
    # far cheaper than walking every decoded body.
    return raw.count(b"[") + raw.count(b"{") > limit


async def read_json_body(
    request: Request, max_bytes: int, max_depth: int, offload: Offload | None = None
) -> tuple[Any, bytes]:
    """The body, parsed and depth-checked: off the event loop when large (``offload``)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media and media != JSON_TYPE and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{media[:100]}': send JSON with "
            "'Content-Type: application/json'."
        )
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
        if body_timed_out(request.scope):  # the server cut it off and already answered 408
            raise InvalidRequest(
                "The request body was not received in time.", status=408, code="request_timeout"
            ) from None
        raise ClientClosedRequest("The client closed the connection mid-request.") from None
    raw = b"".join(chunks)
    if offload is None:
        return _parse_json(raw, max_depth), raw
    return await offload.run(len(raw), lambda: _parse_json(raw, max_depth)), raw


def _parse_json(raw: bytes, max_depth: int) -> Any:
    if not raw.strip():
        raise InvalidRequest("The request body is empty: send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "it is not valid UTF-8" if "utf-8" in str(exc).lower() else str(exc)
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({reason[:200]}).",
            code="invalid_json",
        ) from None
    if _may_be_deep(raw, max_depth):
        _check_depth(body, max_depth)
    return body


def json_response(
    payload: bytes | dict[str, Any] | list[Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(body, status_code=status, headers=headers, media_type=JSON_TYPE)
