"""Streaming relay: forward translated SSE frames and bill exactly once, however it ends.

A ``StreamSession`` owns the upstream response and the settlement. It is finished from the body
iterator's ``finally`` and, as a safety net, from the response's ``__call__`` — the latter covers
a client that vanished before the body iterator ever started, when no ``finally`` would run.
A client that leaves before the upstream's stream ended is settled only after the upstream has
been read on for its usage, in a tracked background task (``relay/drain.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from sluice.core import FailureKind, StreamTranslator, UsageTokens
from sluice.endpoints.spec import MeterInput
from sluice.errors import error_body
from sluice.providers.base import DONE_FRAME, sse_frame
from sluice.relay.admission import Admission
from sluice.relay.billing import Outcome, counted_usage, request_units, settle_logged
from sluice.relay.disconnect import DisconnectWatch, client_may_leave
from sluice.relay.drain import read_for_usage
from sluice.relay.stream_usage import with_usage_chunk
from sluice.state import AppState
from sluice.upstream import UpstreamResponse

__all__ = ["StreamSession", "RelayStreamingResponse"]

log = logging.getLogger("sluice.relay")


class StreamSession:
    def __init__(
        self,
        state: AppState,
        admission: Admission,
        *,
        channel: str,
        upstream_model: str,
        response: UpstreamResponse,
        translator: StreamTranslator,
        first: list[bytes],
        chunks: AsyncIterator[bytes],
        ttft_ms: float,
    ) -> None:
        self._state = state
        self._admission = admission
        self._channel = channel
        self._upstream_model = upstream_model
        self._response = response
        self._translator = translator
        self._first = first
        self._chunks = chunks
        self._ttft_ms = ttft_ms
        self._status = 499  # until the stream completes, assume the client went away
        self._error_code: str | None = "client_closed_request"
        self._finished = False
        # The client received [DONE]: a disconnect after that is a completed stream, not a 499
        # (SDKs close the connection as soon as they read [DONE], racing our own completion).
        self._done_delivered = False
        # The upstream's stream reached its end (or an error): nothing more to read for usage.
        self._upstream_done = False
        # Usage counted here for a usage chunk the upstream did not send; billed as is.
        self._counted: UsageTokens | None = None

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """The client's stream, one write per upstream read.

        Every frame translated from one upstream read goes out in a single write: a fast
        upstream often delivers dozens of events per read, and a write (and a trip through the
        ASGI send chain) per event cost more than the whole translation.
        """
        translator = self._translator
        total_deadline = time.monotonic() + self._state.settings.timeouts.total_s
        try:
            if self._first:
                ended = DONE_FRAME in self._first
                yield b"".join(self._ending(self._first) if ended else self._first)
                self._done_delivered = ended
            if translator.failure is None and not self._done_delivered:
                async for data in self._chunks:
                    batch = translator.feed(data)
                    if batch:
                        ended = DONE_FRAME in batch
                        yield b"".join(self._ending(batch) if ended else batch)
                        if ended:
                            self._done_delivered = True
                            break  # nothing follows [DONE]: end now, not at the upstream's EOF
                        if translator.failure is not None:
                            break  # an error event ends the stream: read no more upstream
                    if time.monotonic() > total_deadline:
                        raise TimeoutError("total stream time exceeded")
                if not self._done_delivered:
                    self._upstream_done = True
                    batch = translator.close()
                    if DONE_FRAME in batch:
                        batch = self._ending(batch)
                    if batch:
                        yield b"".join(batch)
                        self._done_delivered = DONE_FRAME in batch
            self._record_end()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            self._status = 504 if timed_out else 502
            self._error_code = "upstream_timeout" if timed_out else "upstream_stream_error"
            self._count_failure("timeout" if timed_out else "bad_response")
            yield sse_frame(orjson.dumps(_stream_error(timed_out, self._error_code)))
        except Exception:
            # A bug translating the stream, not the client leaving: a 500 billed what the
            # upstream reported (or the text delivered); the client gets an error event.
            log.exception(
                "request %s: internal error during the stream", self._admission.request_id
            )
            self.crashed()
            yield _INTERNAL_ERROR_FRAME
        finally:
            self.finish()

    def crashed(self) -> None:
        """Presenting the stream failed on a bug: recorded as a 500, not as a 499. Also valid
        just after ``finish``: the settlement it spawned reads the status when it runs."""
        if not self._done_delivered:
            self._status, self._error_code = 500, "internal_error"

    def _ending(self, batch: list[bytes]) -> list[bytes]:
        """The frames that end the stream (``[DONE]`` among them), with the usage chunk the
        client asked for added when the upstream sent none. Runs once, at the end."""
        self._upstream_done = True
        translator = self._translator
        view = self._admission.view
        if not view.include_usage or translator.usage is not None:
            return batch
        if translator.failure is not None:
            return batch
        usage = self._counted = counted_usage(
            self._state, self._admission, translator.delivered_text()
        )
        first = self._first[0] if self._first else b""
        kind = self._admission.spec.stream_object
        return with_usage_chunk(batch, first, usage, model=self._upstream_model, kind=kind)

    def _record_end(self) -> None:
        failure = self._translator.failure
        if failure is not None:
            self._status, self._error_code = failure.status, failure.code
            self._count_failure(failure.kind)
        else:
            self._status, self._error_code = 200, None

    def done_sent(self) -> None:
        """The client has had ``[DONE]`` and its response ends there: the stream is over, as
        when the frames run out (the response then closes ``frames()`` early)."""
        self._done_delivered = True
        self._record_end()

    def _hand_back_connection(self) -> None:
        """Keep the upstream connection for the next request when the stream ended properly.

        A stream cut short is closed: dropping the connection makes the upstream stop
        generating. One that completed goes back to the pool — once its body is read to the
        end (the chunked terminator usually arrives with ``[DONE]``; otherwise a short
        background read waits for it). Closing every finished stream cost each streamed
        request a new upstream connection: a TCP (and, to a real provider, TLS) handshake.
        """
        response = self._response
        if self._status != 200 or not self._done_delivered:
            response.close()
        elif response.content.is_eof():
            response.release()
        else:
            self._state.spawn(_release_at_eof(response))

    def _count_failure(self, kind: FailureKind) -> None:
        # A channel that keeps stalling or cutting streams must trip its breaker too, even
        # though these failures come too late to retry.
        model = self._admission.view.model
        self._state.health.record_failure(self._channel, model, kind)
        self._state.metrics.upstream_error(self._channel, kind)

    def finish(self) -> None:
        """Close the upstream and schedule settlement; idempotent."""
        if self._finished:
            return
        self._finished = True
        if self._status == 499 and self._done_delivered:
            self._status, self._error_code = 200, None
        translator = self._translator
        if self._status == 499 and not self._upstream_done and translator.failure is None:
            # The client left mid-stream: what the upstream generated is billed from its own
            # usage, read in the background; what was delivered is the floor.
            shown = translator.delivered_text()
            translator.forget_delivered()
            self._first = []
            self._state.spawn(self._drain_and_settle(shown))
            return
        self._hand_back_connection()
        usage = translator.usage or self._counted
        if usage is None and self._status == 200:
            # A complete stream that reported no usage is billed the request's units, if its
            # spec meters any (characters spoken, seconds transcribed), as a whole answer is.
            usage = request_units(self._admission)
        delivered = None if usage is not None else translator.delivered_text()
        self._state.spawn(self._settle(usage, delivered))

    async def _settle(self, usage: UsageTokens | None, delivered: str | None) -> None:
        # The row is built when the task runs, after whatever closed the stream has had its
        # say (``crashed`` runs right after ``finish`` when a dialect's bug closed it).
        await settle_logged(self._state, self._admission, self._outcome(usage, delivered))

    async def _drain_and_settle(self, delivered: str) -> None:
        """Read the upstream on (never writing to the gone client), then settle once.

        Its real usage when the stream reaches its end and reports one; otherwise the
        reservation, or the delivered text if that costs more. Shutdown cancels a drain still
        running after its grace: it stops reading and settles with what it has.
        """
        limit_s = self._state.settings.timeouts.disconnect_drain_s
        ended = False
        try:
            ended = await read_for_usage(self._translator, self._chunks, limit_s)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # this task's own work is not done: the settlement follows
        finally:
            self._response.close()
        usage = self._translator.usage
        outcome = self._outcome(
            usage,
            delivered if usage is None else None,
            bill_reservation=usage is None or not ended,
        )
        await settle_logged(self._state, self._admission, outcome)

    def _outcome(
        self, usage: UsageTokens | None, delivered: str | None, *, bill_reservation: bool = False
    ) -> Outcome:
        return Outcome(
            status=self._status,
            channel=self._channel,
            upstream_model=self._upstream_model,
            usage=self._with_units(usage),
            delivered_text=delivered,
            error_code=self._error_code,
            ttft_ms=self._ttft_ms,
            stream=True,
            bill_reservation=bill_reservation,
        )

    def _with_units(self, usage: UsageTokens | None) -> UsageTokens | None:
        """The usage with the spec's units (images streamed, ...), for a stream that completed
        or whose upstream reported usage; one that failed with neither made nothing to count."""
        admission = self._admission
        meter = admission.spec.units
        if meter is None or (usage is None and self._status != 200):
            return usage
        units = meter(MeterInput(admission.body, admission.view, None, admission.estimate, usage))
        return usage if units is None else replace(usage or UsageTokens(), units=units)


_DRAIN_LIMIT_S = 1.0
_DRAIN_MAX_BYTES = 64 * 1024


async def _release_at_eof(response: UpstreamResponse) -> None:
    """After ``[DONE]`` only the end of the body should follow; if it does not come soon, or
    anything but blank lines does, the connection is not worth keeping."""
    kept = False
    try:
        async with asyncio.timeout(_DRAIN_LIMIT_S):
            while not response.content.is_eof():
                if (await response.content.read(_DRAIN_MAX_BYTES)).strip():
                    return
        response.release()
        kept = True
    except (aiohttp.ClientError, TimeoutError, OSError):
        pass
    finally:
        if not kept:
            response.close()


_INTERNAL_ERROR_FRAME = sse_frame(
    error_body("The gateway hit an internal error; it has been logged.", "server_error",
               "internal_error")
)  # fmt: skip


def _stream_error(timed_out: bool, code: str) -> dict[str, Any]:
    message = (
        "The upstream stopped sending; the stream timed out."
        if timed_out
        else "The upstream connection broke during the stream."
    )
    return {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}


class RelayStreamingResponse(StreamingResponse):
    def __init__(
        self,
        session: StreamSession,
        headers: dict[str, str],
        frames: AsyncIterator[bytes] | None = None,  # session.frames(), possibly re-shaped
    ) -> None:
        # The session's own OpenAI frames end at [DONE]: the client's stream can end there,
        # before settlement is scheduled (a dialect's re-shaped frames run to their own end).
        self._frames: AsyncGenerator[bytes, None] | None = None
        if frames is None:
            frames = self._frames = session.frames()
        self._body = frames
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with client_may_leave(receive) as watch:
                try:
                    await self._stream(send, watch)
                except OSError:
                    raise  # the client socket went away: a disconnect, ended quietly
                except Exception:
                    # A dialect's bug while re-shaping the frames (the session's own are
                    # handled in ``frames``): not a disconnect. The server logs it.
                    self._session.crashed()
                    raise
        finally:
            self._session.finish()

    async def _stream(self, send: Send, watch: DisconnectWatch) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self._body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if self._frames is not None and chunk.endswith(DONE_FRAME):
                self._session.done_sent()
                break
        watch.closing = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self._frames is not None:
            await self._frames.aclose()  # its clean-up (settlement) after the client is done
