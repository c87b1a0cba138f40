"""The client's address behind trusted load balancers: ``X-Forwarded-For``, read by Sluice.

uvicorn's own proxy-header handling (``FORWARDED_ALLOW_IPS``, trusting 127.0.0.1 by default) is
turned off: it let any local process choose its address, and its trust list lived in the
environment rather than in the config. Here ``trusted_proxies`` (CIDRs) names the peers whose
``X-Forwarded-For`` is believed. The chain is walked from the right, skipping trusted proxies;
the first address that is not a trusted proxy is the client. Everything to the left of it was
written by that client and is ignored, as is an unparsable entry (the walk stops at the last
address it could trust). The result replaces ``scope["client"]``, so key IP allow-lists
(``client_ip``), the access log and failed-authentication throttling all see the same address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ForwardedForMiddleware", "TrustedProxies"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Entries examined from the right. A real chain has a hop per proxy; a client can make the
# header as long as it likes, but only the trusted tail is ever walked.
_MAX_HOPS = 16


def _parse(entry: str) -> _Address | None:
    """An address from one X-Forwarded-For entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``)."""
    text = entry.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: _Address) -> bool:
        return any(address in network for network in self._networks)

    def client_of(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address, given the TCP peer and the X-Forwarded-For value (joined)."""
        current = _parse(peer)
        if current is None or not forwarded_for or not self.trusts(current):
            return peer
        hops = forwarded_for.rsplit(",", _MAX_HOPS)
        if len(hops) > _MAX_HOPS:
            hops[0] = ""  # entries beyond the limit are not split off: never trust them
        for entry in reversed(hops):
            address = _parse(entry)
            if address is None:
                break  # garbage: the last address we could trust stands
            current = address
            if not self.trusts(address):
                break
        return str(current)


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    values = [value for name, value in headers if name == b"x-forwarded-for"]
    if not values:
        return None
    # Several headers form one list, in order (RFC 9110 5.3).
    return b",".join(values).decode("latin-1")


class ForwardedForMiddleware:
    """Pure ASGI: rewrite ``scope["client"]`` for requests that arrive through a trusted proxy.

    Installed only when ``trusted_proxies`` is set, so a directly exposed gateway pays nothing.
    """

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self._trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if client:
                forwarded = _forwarded_for(scope["headers"])
                if forwarded is not None:
                    host = self._trusted.client_of(client[0], forwarded)
                    if host != client[0]:
                        scope["client"] = (host, 0)
        await self.app(scope, receive, send)
