"""A reverse proxy with no logic at all: the floor for a Python gateway on Sluice's stack.

uvicorn (uvloop + httptools, N workers) and one aiohttp session per worker — the parts Sluice
is built on — forwarding ``POST /v1/chat/completions`` to the upstream and streaming the answer
back as it arrives. No authentication, limits, budgets, metering, routing or translation: the
client's ``Authorization`` goes to the upstream as it is. Measured in the same run as Sluice,
so the cost of the stack itself is known and what Sluice adds above it is its own work.

Run: ``python bench/bare_proxy.py --upstream http://127.0.0.1:8011 --port 8012 --workers 2``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

_FORWARDED = (b"authorization", b"content-type")


def make_app() -> ASGIApp:
    """The ASGI app (uvicorn factory); the upstream comes from ``BARE_PROXY_UPSTREAM``."""
    upstream = os.environ["BARE_PROXY_UPSTREAM"].rstrip("/")
    held: dict[str, aiohttp.ClientSession] = {}

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                held["session"] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await held["session"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["method"] != "POST":  # GET /health for the harness's readiness poll
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in _FORWARDED}
        url = upstream + scope["path"]
        async with held["session"].post(url, data=body, headers=headers) as response:
            kind = response.headers.get("content-type", "application/json").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(b"content-type", kind)],
                }
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    os.environ["BARE_PROXY_UPSTREAM"] = args.upstream
    uvicorn.run(
        "bench.bare_proxy:make_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
