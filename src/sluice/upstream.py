"""The only place that performs upstream HTTP: one aiohttp session per worker.

``open`` returns once the upstream's status line and headers have arrived (time to first byte
is bounded by ``first_byte_s``); connection errors and timeouts are turned into
``UpstreamFailure`` so the relay can retry or report them uniformly. ``read_body`` and
``read_prefix`` read a body with a size cap: an upstream must not make a worker hold more than
the operator allowed (``limits.max_upstream_body_bytes``).

``Upstream`` / ``UpstreamResponse`` are the interface the relay and the health probe use: the
subset of aiohttp's ``ClientResponse`` they touch, so the real response is returned as is (no
wrapper per request) and ``sluice.upstream_mock.MockUpstream`` can stand in for it in tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from yarl import URL

from sluice.compat.aiohttp import request_body
from sluice.compat.aiohttp import use_idle_timeout as _use_idle_timeout
from sluice.core import UpstreamFailure, UpstreamRequest

__all__ = [
    "BodyTooLarge",
    "Timeouts",
    "Upstream",
    "UpstreamBody",
    "UpstreamClient",
    "UpstreamResponse",
    "UpstreamUnavailable",
    "create_session",
    "read_body",
    "read_prefix",
]


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float
    first_byte_s: float
    idle_s: float
    total_s: float = 900.0


class UpstreamBody(Protocol):
    """An upstream response body being received (aiohttp's ``StreamReader`` satisfies it)."""

    async def read(self, n: int = -1) -> bytes: ...

    async def readany(self) -> bytes: ...

    def iter_any(self) -> AsyncIterator[bytes]: ...

    def is_eof(self) -> bool: ...


class UpstreamResponse(Protocol):
    """An upstream answer whose status line and headers have arrived."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive keys

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> UpstreamBody: ...

    def close(self) -> None:
        """Drop the connection (the rest of the body is not wanted)."""
        ...

    def release(self) -> None:
        """Give the connection back for reuse (the body was read to its end)."""
        ...


class Upstream(Protocol):
    async def open(
        self, request: UpstreamRequest, timeouts: Timeouts, budget_s: float | None = None
    ) -> UpstreamResponse:
        """Send ``request``; return once the headers arrived. Raises ``UpstreamUnavailable``
        when no answer came (connection failure, timeout)."""
        ...


class UpstreamUnavailable(Exception):
    """Raised by ``UpstreamClient.open`` with a classified failure."""

    def __init__(self, failure: UpstreamFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class BodyTooLarge(Exception):
    """The upstream body is larger than the cap ``read_body`` was given."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upstream body over {limit} bytes")
        self.limit = limit


async def read_body(response: UpstreamResponse, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as more than ``limit`` bytes arrived.

    Counted after decompression (a small gzip body can inflate a thousandfold), so
    ``Content-Length`` alone cannot be trusted; it only refuses early a plain body that
    announces more. The caller closes the response on ``BodyTooLarge``. The same loop as
    aiohttp's own ``read()``, so a body of one chunk costs no more than it did.
    """
    declared = response.content_length
    if declared is not None and declared > limit and "content-encoding" not in response.headers:
        raise BodyTooLarge(limit)
    content = response.content
    parts: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_prefix(response: UpstreamResponse, limit: int) -> bytes:
    """At most the first ``limit`` bytes of the body (error bodies: only their start matters)."""
    content = response.content
    parts: list[bytes] = []
    size = 0
    while size < limit and (chunk := await content.read(limit - size)):
        size += len(chunk)
        parts.append(chunk)
    return b"".join(parts)


def create_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # no global cap: per-host concurrency is the upstream's business
        limit_per_host=0,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
        keepalive_timeout=30,
    )
    # No trace_configs and no skip_auto_headers: both cost measurable time on every request
    # (aiohttp rebuilds the skip set per request and runs every trace signal).
    # No cookie jar: this one session serves every tenant, so a cookie an upstream sets (CDNs
    # in front of provider APIs do) would otherwise go out with every later client's request;
    # it also spares the jar's filtering on each request.
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        raise_for_status=False,
        json_serialize=lambda _: "",  # never used: bodies are pre-serialised bytes
    )


def _data(request: UpstreamRequest) -> Any:
    if request.stream is None:
        return request_body(request.body)
    return request.stream.chunks()  # read from the spool as aiohttp sends it


def _headers(request: UpstreamRequest) -> dict[str, str]:
    if request.stream is None:
        return request.headers
    # An exact length: aiohttp sends an iterable without chunked encoding then, which some
    # upstreams (and proxies in front of them) refuse for uploads.
    return {**request.headers, "content-length": str(request.stream.length)}


_MAX_CACHED = 4096  # distinct upstream URLs / timeout sets; a config has a few dozen


class UpstreamClient:
    """The aiohttp ``Upstream``."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        # Parsed URLs and timeout objects are reused: parsing and building them cost about a
        # tenth of aiohttp's per-request work, and they repeat for every call to a channel.
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}

    def _url(self, url: str) -> URL:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _MAX_CACHED:
                self._urls.clear()
            parsed = self._urls[url] = URL(url)
        return parsed

    def _client_timeout(self, timeouts: Timeouts) -> aiohttp.ClientTimeout:
        # aiohttp's total covers reading the body too: it is the per-channel total timeout.
        timeout = self._timeouts.get(timeouts)
        if timeout is None:
            if len(self._timeouts) >= _MAX_CACHED:
                self._timeouts.clear()
            timeout = self._timeouts[timeouts] = aiohttp.ClientTimeout(
                total=timeouts.total_s, connect=timeouts.connect_s, sock_read=timeouts.first_byte_s
            )
        return timeout

    async def open(
        self, request: UpstreamRequest, timeouts: Timeouts, budget_s: float | None = None
    ) -> aiohttp.ClientResponse:
        """``budget_s`` caps the wait for headers (what is left of the request's deadline)."""
        timeout = self._client_timeout(timeouts)
        cap = None if budget_s is None else asyncio.get_running_loop().time() + max(budget_s, 0.001)
        try:
            async with asyncio.timeout_at(cap):
                response = await self._session.request(
                    request.method,
                    self._url(request.url),
                    data=_data(request),
                    headers=_headers(request),
                    timeout=timeout,
                    allow_redirects=False,
                )
            if timeouts.idle_s != timeouts.first_byte_s:
                _use_idle_timeout(response, timeouts.idle_s)
            return response
        except TimeoutError:
            raise UpstreamUnavailable(
                UpstreamFailure(
                    status=504,
                    kind="timeout",
                    message="The upstream did not answer in time.",
                    code="upstream_timeout",
                )
            ) from None
        except aiohttp.ClientConnectorError:
            raise UpstreamUnavailable(
                UpstreamFailure(
                    status=502,
                    kind="server",
                    message="Could not connect to the upstream.",
                    code="upstream_connect_error",
                )
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(
                UpstreamFailure(
                    status=502,
                    kind="server",
                    message=f"The upstream connection failed ({type(exc).__name__}).",
                    code="upstream_connection_error",
                )
            ) from None
