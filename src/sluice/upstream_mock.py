"""An in-memory ``Upstream`` for tests: no sockets, canned answers (like httpx's MockTransport).

Part of Sluice's supported testing API, not used by the gateway itself. Put a ``MockUpstream``
on a running gateway's state (``app.state.sluice.upstream = MockUpstream(handler)``) and every
channel call goes to ``handler`` instead of the network::

    def handler(request: UpstreamRequest) -> MockReply:
        if "bad-channel" in request.url:
            return MockReply(503, body=b'{"error": {"message": "overloaded"}}')
        return MockReply(200, body=orjson.dumps(completion))

    upstream = MockUpstream(handler)

A reply's ``chunks`` are handed out one per read, like the frames of a stream as they arrive
(``sse`` builds them from JSON payloads). The handler may be async, and may raise
``UpstreamUnavailable`` to stand for a connection failure or timeout. ``requests`` records what
was sent, and each response records whether it was closed or released, so tests can check that
nothing is leaked.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

from sluice.core import UpstreamRequest
from sluice.upstream import Timeouts

__all__ = ["MockReply", "MockResponse", "MockUpstream", "sse"]


@dataclass(frozen=True, slots=True)
class MockReply:
    status: int = 200
    body: bytes = b""  # sent as one chunk unless ``chunks`` is given
    headers: Mapping[str, str] = field(default_factory=dict)
    chunks: Sequence[bytes] | None = None


def sse(*payloads: bytes | str, done: bool = True) -> list[bytes]:
    """SSE chunks, one per payload (``data: <payload>\\n\\n``), ending with ``[DONE]``."""
    frames = [b"data: " + (p.encode() if isinstance(p, str) else p) + b"\n\n" for p in payloads]
    return [*frames, b"data: [DONE]\n\n"] if done else frames


class _MockBody:
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = [c for c in chunks if c]
        self._index = 0
        self._rest = b""  # what a size-capped read left of the current chunk

    def is_eof(self) -> bool:
        return not self._rest and self._index >= len(self._chunks)

    async def readany(self) -> bytes:
        if self._rest:
            data, self._rest = self._rest, b""
            return data
        if self._index >= len(self._chunks):
            return b""
        self._index += 1
        return self._chunks[self._index - 1]

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            parts = []
            while data := await self.readany():
                parts.append(data)
            return b"".join(parts)
        data = await self.readany()
        data, self._rest = data[:n], data[n:]
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        while data := await self.readany():
            yield data


class MockResponse:
    def __init__(self, reply: MockReply) -> None:
        self.status = reply.status
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(reply.headers))
        chunks = reply.chunks if reply.chunks is not None else [reply.body]
        self.content_length = len(reply.body) if reply.chunks is None else None
        self.content = _MockBody(chunks)
        self.closed = False  # the connection was dropped
        self.released = False  # the connection was given back for reuse

    def close(self) -> None:
        self.closed = True

    def release(self) -> None:
        self.released = True


Handler = Callable[[UpstreamRequest], MockReply | Awaitable[MockReply]]


class MockUpstream:
    """``Upstream`` answering every request with ``handler(request)``."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[UpstreamRequest] = []
        self.responses: list[MockResponse] = []

    async def open(
        self, request: UpstreamRequest, timeouts: Timeouts, budget_s: float | None = None
    ) -> MockResponse:
        self.requests.append(request)
        reply = self._handler(request)
        if inspect.isawaitable(reply):
            reply = await reply
        response = MockResponse(reply)
        self.responses.append(response)
        return response
