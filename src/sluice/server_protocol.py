"""uvicorn's httptools protocol with deadlines for slow clients and an OpenAI-shaped 503.

uvicorn closes idle keep-alive connections, but a connection that sends its request line and
headers (or its body) a byte at a time is kept forever: a few hundred such sockets (slowloris)
hold a worker's file descriptors and memory at no cost to the sender. Here each connection has
one watchdog timer, re-armed only when it fires, checking the phase the request is in:

- head: from the connection's first byte (or its opening, for its first request) to the end of
  the headers, at most ``limits.header_timeout_s``;
- body: from the end of the headers to the end of the body, at most ``limits.body_timeout_s``.

Over either deadline the connection gets ``408 request_timeout`` (when a request was started
and no response was) and is closed. A request stays free of timers: only a few stores of
``loop.time()`` per request, no ``call_later`` or ``asyncio.timeout`` per request or read.
An application blocked reading the body sees a disconnect; ``body_timed_out`` tells it why,
so its log says 408 rather than 499.

``limits.max_connections_per_worker`` replaces uvicorn's ``limit_concurrency`` (same rule:
connections or running requests), answering with OpenAI-shaped JSON rather than plain text.

This is the one module that relies on uvicorn's internals (the httptools protocol's hooks and
attributes, its flow control and request cycle); ``tests/test_compat.py`` names what it uses
and fails first when a uvicorn release changes it.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sluice.settings import Settings

__all__ = ["DeadlineHttpToolsProtocol", "body_timed_out", "uvicorn_options"]

_TIMED_OUT = "sluice.body_timed_out"

_TIMEOUT_BODY = orjson.dumps(
    {
        "error": {
            "message": "The request was not received in time: send the headers and body "
            "without pausing.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_timeout",
        }
    }
)
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
) + _TIMEOUT_BODY

_OVERLOADED_BODY = orjson.dumps(
    {
        "error": {
            "message": "The gateway is at its connection limit; retry shortly.",
            "type": "service_unavailable",
            "param": None,
            "code": "server_overloaded",
        }
    }
)
_OVERLOADED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_OVERLOADED_BODY)).encode()),
    (b"retry-after", b"1"),
    (b"connection", b"close"),  # closing frees a connection slot at once
]


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": _OVERLOADED_HEADERS})
    await send({"type": "http.response.body", "body": _OVERLOADED_BODY})


def body_timed_out(scope: Scope) -> bool:
    """Whether the server cut this request's body off at ``limits.body_timeout_s``."""
    return bool(scope.get(_TIMED_OUT))


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        *args: Any,
        header_timeout_s: float,
        body_timeout_s: float,
        max_connections: int | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._body_timeout_s = body_timeout_s
        self._max_connections = max_connections
        self.limit_concurrency = None  # checked here instead, with a JSON answer
        self._app = self.app
        self._deadline: float | None = None  # loop time the current phase must end by
        self._in_body = False
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._set_deadline(self.loop.time() + self._header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a kept-alive connection
            self._set_deadline(self.loop.time() + self._header_timeout_s)

    def on_headers_complete(self) -> None:
        self._set_deadline(self.loop.time() + self._body_timeout_s)
        self._in_body = True
        limit = self._max_connections
        if limit is not None:
            # This connection is counted in connections; the request is not yet in tasks.
            over = len(self.connections) > limit or len(self.tasks) >= limit
            self.app = _overloaded if over else self._app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline = None
        self._in_body = False
        super().on_message_complete()

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        watchdog = self._watchdog
        if watchdog is not None and watchdog.when() <= deadline:
            return  # the usual case: the watchdog looks before then and re-arms for it
        if watchdog is not None:
            watchdog.cancel()
        self._watchdog = self.loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._watchdog = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            if not self.flow.read_paused:
                self._time_out()
                return
            # Reading is paused by the server (a pipelined request waits, or the app has not
            # read the buffered body yet): the client is not the slow one; restart its clock.
            deadline = self._deadline = now + self._body_timeout_s
        # Idle or inside a response: look again later (_set_deadline brings it forward when a
        # new phase must end sooner).
        at = now + self._header_timeout_s if deadline is None else deadline
        self._watchdog = self.loop.call_at(at, self._check_deadline)

    def _time_out(self) -> None:
        cycle = self.cycle
        if self._in_body:
            self.scope[_TIMED_OUT] = True  # type: ignore[literal-required]
            reply = cycle is not None and not cycle.response_started
        else:
            # A request was begun (scope set) and no earlier response is still being written.
            reply = self.scope is not None and (cycle is None or cycle.response_complete)
        if reply:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings ``sluice serve`` (and the test harness) run the app with."""
    limits = settings.limits
    protocol = functools.partial(  # a partial of a module-level class pickles for spawn
        DeadlineHttpToolsProtocol,
        header_timeout_s=limits.header_timeout_s,
        body_timeout_s=limits.body_timeout_s,
        max_connections=limits.max_connections_per_worker,
    )
    return {
        "http": protocol,
        "ws": "none",  # no WebSocket routes: do not load a WebSocket implementation per worker
        # Client addresses come from trusted_proxies (sluice.forwarded), never from uvicorn's
        # FORWARDED_ALLOW_IPS environment variable.
        "proxy_headers": False,
        "timeout_keep_alive": max(int(settings.keep_alive_s), 1),
    }
