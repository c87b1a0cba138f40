"""One way to call one channel, shared by the relay and the health probe.

Build the adapter's request, open it, and on an HTTP error status read a capped error body,
close the response and classify the body with the channel's own key masked
(``Adapter.parse_error``): redaction and clean-up cannot differ between the two callers. On
success the open response is handed back; the caller reads it and closes or releases it.
"""

from __future__ import annotations

import aiohttp

from sluice.core import RelayCall, UpstreamFailure
from sluice.routing import Channel
from sluice.state import AppState
from sluice.upstream import UpstreamResponse, UpstreamUnavailable, read_prefix

__all__ = ["ChannelFailed", "open_channel"]

_MAX_ERROR_BODY = 64 * 1024  # only an error body's start matters


class ChannelFailed(Exception):
    """A channel did not serve the call; ``failure`` is safe to show the client."""

    def __init__(self, failure: UpstreamFailure, *, answered: bool = False) -> None:
        super().__init__(failure.message)
        self.failure = failure
        # The upstream answered with an HTTP error status (classified from its body), as
        # opposed to no answer at all or a broken answer.
        self.answered = answered


async def open_channel(
    state: AppState,
    channel: Channel,
    call: RelayCall,
    *,
    budget_s: float | None = None,
    request_id: str | None = None,
) -> UpstreamResponse:
    """The channel's open response with a status below 400, or ``ChannelFailed``.

    ``request_id`` goes upstream as ``x-request-id``; ``budget_s`` caps the wait for headers.
    The adapter's own refusals (``InvalidRequest`` from ``build_request``) propagate as is.
    """
    request = channel.adapter.build_request(call, channel.config)
    if request_id is not None:
        request.headers["x-request-id"] = request_id
    try:
        response = await state.upstream.open(request, state.timeouts_for(channel.config), budget_s)
    except UpstreamUnavailable as exc:
        raise ChannelFailed(exc.failure) from None
    if response.status < 400:
        return response
    body = await _error_body(response)
    secret = channel.config.api_key.get_secret_value()
    failure = channel.adapter.parse_error(response.status, response.headers, body, secret)
    raise ChannelFailed(failure, answered=True)


async def _error_body(response: UpstreamResponse) -> bytes:
    """At most the first 64 KiB; a body that breaks off counts as empty. The connection is
    dropped either way: the rest of an error body is not worth reading."""
    try:
        return await read_prefix(response, _MAX_ERROR_BODY)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return b""
    finally:
        response.close()
