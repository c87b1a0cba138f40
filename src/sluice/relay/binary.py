"""Binary answers (speech audio, and any spec whose response kind is ``binary``): the upstream's
bytes go to the client as they arrive, never held, and the request is billed once at the end.

The engine reads the first chunk before committing (a channel that fails before it may still be
failed over); from then on the answer is the client's. What is billed is the spec's units for
the request (characters spoken, calls): the upstream produced the audio whether or not the
client stayed to hear all of it, so a client that leaves, or an upstream that breaks off after
the first byte, does not make it free.
"""

from __future__ import annotations

import logging
import time

import aiohttp
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sluice.core import UsageTokens
from sluice.relay.admission import Admission
from sluice.relay.billing import Outcome, request_units, settle_logged
from sluice.relay.disconnect import DisconnectWatch, client_may_leave
from sluice.state import AppState
from sluice.upstream import UpstreamResponse

__all__ = ["BinaryRelayResponse"]

log = logging.getLogger("sluice.relay")

# Upstream headers worth passing on: what the bytes are; never the upstream's own ids/cookies.
_KEPT_HEADERS = ("content-type", "content-disposition", "content-language")


class BinaryRelayResponse(Response):
    def __init__(
        self,
        state: AppState,
        admission: Admission,
        *,
        channel: str,
        upstream_model: str,
        upstream: UpstreamResponse,
        first: bytes,
        headers: dict[str, str],
    ) -> None:
        for name in _KEPT_HEADERS:
            value = upstream.headers.get(name)
            if value is not None:
                headers[name] = value
        headers.setdefault("content-type", "application/octet-stream")
        # No body given: Starlette then sets no Content-Length (the length is the upstream's).
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._state = state
        self._admission = admission
        self._channel = channel
        self._upstream_model = upstream_model
        self._upstream = upstream
        self._first = first
        self._ttft_ms = (time.perf_counter() - admission.started) * 1000
        self._status = 499
        self._error_code: str | None = "client_closed_request"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with client_may_leave(receive) as watch:
                try:
                    await self._relay(send, watch)
                except (aiohttp.ClientError, TimeoutError):
                    self._status, self._error_code = 502, "upstream_stream_error"
                    log.warning("request %s: upstream broke off a binary answer", self._request_id)
        finally:
            self._finish()

    @property
    def _request_id(self) -> str:
        return self._admission.request_id

    async def _relay(self, send: Send, watch: DisconnectWatch) -> None:
        limit = self._state.settings.limits.max_upstream_binary_bytes
        deadline = time.monotonic() + self._state.settings.timeouts.total_s
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        sent = len(self._first)
        if self._first:
            await send({"type": "http.response.body", "body": self._first, "more_body": True})
        self._first = b""
        async for chunk in self._upstream.content.iter_any():
            sent += len(chunk)
            if sent > limit:
                # Cut off: the client sees a short body (its headers are long gone).
                self._status, self._error_code = 502, "upstream_response_too_large"
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if time.monotonic() > deadline:
                self._status, self._error_code = 504, "upstream_timeout"
                break
        else:
            self._status, self._error_code = 200, None
        watch.closing = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _finish(self) -> None:
        if self._status == 200 and self._upstream.content.is_eof():
            self._upstream.release()
        else:
            self._upstream.close()
        admission = self._admission
        outcome = Outcome(
            status=self._status,
            channel=self._channel,
            upstream_model=self._upstream_model,
            usage=request_units(admission) or UsageTokens(),
            error_code=self._error_code,
            ttft_ms=self._ttft_ms,
            stream=True,
        )
        self._state.spawn(settle_logged(self._state, admission, outcome))
