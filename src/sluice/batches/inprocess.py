"""One batch line through the app's own relay: an in-process ASGI call.

The scope is synthesized as uvicorn would for ``POST <url>``, plus two scope keys no client can
set (``relay.admission``): the batch's key record, which authenticates the call instead of a
header, and the price share its lines are billed at. So a line goes through everything a
client's request does (admission, budgets, routing and translation to any channel type,
failover, billing, the access log) and an Anthropic or Gemini channel serves a chat line.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import ASGIApp, Message

from sluice.keys import KeyRecord
from sluice.relay.admission import INTERNAL_KEY_SCOPE, PRICE_PPM_SCOPE

__all__ = ["InProcessAnswer", "call_in_process"]


@dataclass(frozen=True, slots=True)
class InProcessAnswer:
    status: int
    request_id: str
    body: bytes


async def call_in_process(
    app: ASGIApp,
    path: str,
    body: bytes,
    *,
    key: KeyRecord,
    request_id: str,
    price_ppm: int,
) -> InProcessAnswer:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
        ],
        "client": None,
        "server": None,
        INTERNAL_KEY_SCOPE: key,
        PRICE_PPM_SCOPE: price_ppm,
    }
    sent_body = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # nobody disconnects: the line's task is cancelled instead
        return {"type": "http.disconnect"}

    status = 500
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return InProcessAnswer(status=status, request_id=request_id, body=b"".join(chunks))
