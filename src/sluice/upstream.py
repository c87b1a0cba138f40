"""The only place that performs upstream HTTP: one aiohttp session per worker.

``open`` returns once the upstream's status line and headers have arrived (time to first byte
is bounded by ``first_byte_s``); connection errors and timeouts are turned into
``UpstreamFailure`` so the relay can retry or report them uniformly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from sluice.providers.base import UpstreamFailure, UpstreamRequest

__all__ = ["Timeouts", "UpstreamClient", "UpstreamUnavailable", "create_session"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float
    first_byte_s: float
    idle_s: float


class UpstreamUnavailable(Exception):
    """Raised by ``UpstreamClient.open`` with a classified failure."""

    def __init__(self, failure: UpstreamFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def create_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # no global cap: per-host concurrency is the upstream's business
        limit_per_host=0,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
        keepalive_timeout=30,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        raise_for_status=False,
        json_serialize=lambda _: "",  # never used: bodies are pre-serialised bytes
    )


class UpstreamClient:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def open(self, request: UpstreamRequest, timeouts: Timeouts) -> aiohttp.ClientResponse:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect_s, sock_read=timeouts.idle_s
        )
        try:
            async with asyncio.timeout(timeouts.first_byte_s + timeouts.connect_s):
                return await self._session.request(
                    request.method,
                    request.url,
                    data=request.body,
                    headers=request.headers,
                    timeout=timeout,
                    allow_redirects=False,
                )
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
