"""Structured JSON access logs and request ids, as pure ASGI middleware.

Every response carries ``x-request-id`` (the client's, when well-formed, else a fresh one); the
same id is stored in the scope for the relay to send upstream and to key the usage row. One JSON
line per request goes to the ``sluice.access`` logger. It never contains a key, a header value
or a body — unless ``log_bodies`` is on, when the first bytes of the request body are added.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sluice.compat.logging import skip_caller_lookup
from sluice.relay.http import REQUEST_ID_PATTERN

__all__ = [
    "AccessLogMiddleware",
    "configure_access_log",
    "flush_access_log",
    "SCOPE_REQUEST_ID",
    "SCOPE_LOG",
]

SCOPE_REQUEST_ID = "sluice.request_id"
SCOPE_LOG = "sluice.log"  # dict the handlers may fill: model, channel, key_id
_BODY_LOG_BYTES = 4096

log = logging.getLogger("sluice.access")


class _BufferedLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Access lines through a 64 KiB buffer: one write(2) per many requests, not per request.

    A line reaches the file at most ``max_delay_s`` after it was logged while requests keep
    coming; ``flush`` (called every second by the server, and by logging at exit) covers the
    idle tail.
    """

    def __init__(self, max_delay_s: float = 0.25) -> None:
        stream = open(  # noqa: SIM115 - lives as long as the process; closefd=False
            sys.stderr.fileno(), "w", buffering=64 * 1024, encoding="utf-8", closefd=False
        )
        super().__init__(stream)
        self._max_delay_s = max_delay_s
        self._flushed_at = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            now = time.monotonic()
            if now - self._flushed_at >= self._max_delay_s:
                self.flush()
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.handleError(record)

    def flush(self) -> None:
        self._flushed_at = time.monotonic()
        super().flush()


def configure_access_log() -> None:
    """Send access lines to stderr as bare JSON (server processes only; tests use caplog)."""
    if not log.handlers:
        # Records carry no thread, process or caller details (nothing prints them): building
        # them is then several times cheaper, on every request.
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        skip_caller_lookup()
        handler = _BufferedLineHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def flush_access_log() -> None:
    for handler in log.handlers:
        handler.flush()


def _supplied_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            return text if REQUEST_ID_PATTERN.match(text) else None
    return None


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, log_bodies: bool = False) -> None:
        self.app = app
        self.log_bodies = log_bodies
        # Ids are a random per-process prefix plus a counter: unique across workers and
        # replicas, and far cheaper than a uuid4 (a getrandom syscall) per request.
        self._id_prefix = f"req_{uuid.uuid4().hex[:16]}"
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _supplied_request_id(scope) or f"{self._id_prefix}{next(self._ids):x}"
        scope[SCOPE_REQUEST_ID] = request_id
        scope[SCOPE_LOG] = {}
        header = (b"x-request-id", request_id.encode())
        status = 500
        body = bytearray()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append(header)
                message["headers"] = headers
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < _BODY_LOG_BYTES:
                body.extend(message.get("body", b"")[: _BODY_LOG_BYTES - len(body)])
            return message

        try:
            await self.app(scope, receive_wrapper if self.log_bodies else receive, send_wrapper)
        finally:
            self._finish(scope, request_id, status, started, bytes(body))

    def _finish(
        self, scope: Scope, request_id: str, status: int, started: float, body: bytes
    ) -> None:
        elapsed = time.perf_counter() - started
        endpoint = scope.get("endpoint")
        route = getattr(endpoint, "__name__", "unmatched")
        state = getattr(getattr(scope.get("app"), "state", None), "sluice", None)
        metrics = getattr(state, "metrics", None)
        if metrics is not None:
            metrics.http_requests.get(route, scope["method"], str(status)).inc()
            metrics.http_latency.get(route).observe(elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],  # never the query string: it may carry a key
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "client": (scope.get("client") or ("", 0))[0],
            **scope.get(SCOPE_LOG, {}),
        }
        if self.log_bodies:
            line["body"] = body.decode("utf-8", "replace")
        log.info(orjson.dumps(line).decode())
