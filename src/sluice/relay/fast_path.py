"""Pure-ASGI dispatch of the relay's POST routes, ahead of Starlette's router.

Through Starlette every relayed request would pass CORS, the exception middleware, the router's
regex scan and ``request_response``'s two exception wrappers — and three extra wrapper calls on
every ``send`` of a stream — for routes with fixed paths and one error rule. Here a
dict lookup finds the handler and a ``SluiceError`` is rendered by the same function the app's
exception handler uses. Anything else (other paths and methods, requests with an ``Origin``
header, which CORS must see, a non-empty ``root_path``) goes through Starlette unchanged, and an
unexpected exception still reaches the app's outermost handler (500, OpenAI-shaped, logged).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sluice.errors import SluiceError

__all__ = ["RelayFastPath", "fast_post_routes"]

Handler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[Request, Exception], Awaitable[Response]]


def fast_post_routes(routes: Iterable[BaseRoute]) -> dict[str, Handler]:
    """Path -> handler for the routes that accept only POST and have no path parameters."""
    table: dict[str, Handler] = {}
    for route in routes:
        if isinstance(route, Route) and route.methods == {"POST"} and not route.param_convertors:
            table[route.path] = route.endpoint
    return table


def _has_origin(scope: Scope) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])


class RelayFastPath:
    def __init__(self, app: ASGIApp, routes: dict[str, Handler], render_error: ErrorRenderer):
        self.app = app
        self._routes = routes
        self._render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            handler = self._routes.get(scope["path"])
            if handler is not None and not _has_origin(scope):
                scope["endpoint"] = handler  # what the router would set (the access log reads it)
                scope["path_params"] = {}
                request = Request(scope, receive, send)
                try:
                    response = await handler(request)
                except SluiceError as exc:
                    response = await self._render_error(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
