"""aiohttp: switch a response's socket read timeout from first byte to idle gaps.

Touches ``ResponseHandler.read_timeout`` (a property aiohttp sets from ``ClientTimeout.sock_read``)
and ``ResponseHandler.start_timeout()``, neither documented: ``response.connection.protocol`` is
aiohttp's client protocol object. Why: aiohttp has one read timeout for the whole response, but
Sluice bounds the wait for the headers (``first_byte_s``, minutes for a slow model) and the gaps
between stream chunks (``idle_s``) separately. Public API offers no way to change ``sock_read``
once the request is sent. If these go away, the idle limit silently becomes the first-byte
limit; ``tests/test_compat.py`` fails first.
"""

from __future__ import annotations

import aiohttp
import aiohttp.abc
import aiohttp.payload

__all__ = ["request_body", "use_idle_timeout"]


def use_idle_timeout(response: aiohttp.ClientResponse, idle_s: float) -> None:
    """From now on, a read that waits longer than ``idle_s`` for the next bytes times out."""
    # The socket read timeout first bounds the wait for the response headers (time to first
    # byte, counted from when the request was sent, so connecting is not included); once the
    # headers are in, gaps between body chunks get the idle limit. The running timer is
    # restarted too, or the first gap would still get the first-byte limit
    # (tests/resilience/test_streams.py::test_long_first_byte_with_short_idle_gap).
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is not None:
        protocol.read_timeout = idle_s
        # Looked up, not called blindly: if a release drops it, requests still work (with the
        # first-byte limit on gaps) and tests/test_compat.py reports it.
        restart = getattr(protocol, "start_timeout", None)
        if callable(restart):
            restart()


# aiohttp warns (ResourceWarning) for every bytes body over 1 MiB, suggesting io.BytesIO, whose
# payload reads its chunks through the default executor (where aiohttp's DNS lookups also run).
# A body Sluice sends is already in memory and goes to the transport in one write, which is
# flow-controlled and does not block the loop: a payload of our own carries it without the
# warning. ``aiohttp.payload.Payload`` is public and meant to be subclassed; what is pinned here
# is only the threshold.
_LARGE_BODY = 1024 * 1024


class _InMemoryBody(aiohttp.payload.Payload):
    _value: bytes

    def __init__(self, value: bytes) -> None:
        super().__init__(value, content_type="application/octet-stream")
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._value

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await writer.write(self._value)


def request_body(body: bytes) -> bytes | aiohttp.payload.Payload:
    """What to pass as ``data=``: the bytes themselves, or for large bodies a payload that sends
    them the same way without aiohttp's large-body warning."""
    return body if len(body) <= _LARGE_BODY else _InMemoryBody(body)
