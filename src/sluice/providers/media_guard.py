"""The SSRF guard of image fetching: which addresses Sluice may connect to for a tenant.

A tenant chooses the image URLs Sluice fetches, so a URL naming an internal address (a cloud
metadata service, a database, the admin API on loopback) must never be connected to. Checking
the URL's host as written is not enough: the HTTP client normalises it first (IDNA maps
full-width digits and ideographic full stops to ``127.0.0.1``), the system resolver reads
``2130706433``, ``0x7f.1`` or ``127.1`` as addresses, and a public name can resolve, or
re-resolve between a check and the connection (DNS rebinding), to an internal one. So the
decision is taken where the connection is made:

- the fetch session's connector gets a ``socket_factory`` that sees every address a socket is
  about to be connected to (IP literals skip aiohttp's resolver, never the socket factory) and
  refuses any the policy does not allow: this is the check that holds whatever came before;
- its resolver refuses a name if any address it resolves to is not allowed, so a name with one
  internal address is refused whole rather than tried address by address;
- ``check_url`` refuses, before any I/O, a URL whose host (as aiohttp will use it) is an
  address the policy does not allow, in whatever notation it was written.

The default policy allows globally routable unicast addresses only (``is_global``: not private,
loopback, link-local, shared 100.64.0.0/10, reserved or unspecified), looking through IPv6
forms that embed an IPv4 address. It is a constructor parameter so a test can declare one
loopback port "public"; production code has no test branch.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

__all__ = [
    "AddressPolicy",
    "BlockedAddress",
    "GuardedResolver",
    "IPAddress",
    "any_address",
    "check_url",
    "guarded_socket_factory",
    "parse_address",
    "public_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (address, port) -> may Sluice connect there?
AddressPolicy = Callable[[IPAddress, int], bool]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedAddress(OSError):
    """A connection the policy refused. An ``OSError`` so aiohttp and aiohappyeyeballs treat it
    as they treat a refused connection (and report it the same way)."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (6to4, Teredo, NAT64, IPv4-compatible)."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or int(ip) >> 32 == 0:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def public_address(ip: IPAddress, port: int) -> bool:
    """The default policy: globally routable unicast addresses, any port."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d (the socket connects over IPv4)
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and not public_address(inner, port):
            return False
    return True


def any_address(ip: IPAddress, port: int) -> bool:
    """The policy of a channel with ``allow_private_image_urls``."""
    return True


def parse_address(host: str) -> IPAddress | None:
    """``host`` as an address if it is one in any notation a resolver would accept, else None.

    Besides the canonical forms: a zone id (``fe80::1%eth0``), a trailing dot, and the legacy
    IPv4 forms ``inet_aton`` reads (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``).
    """
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host.isascii() or not host.replace(".", "").isalnum():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url(url: URL, policy: AddressPolicy) -> None:
    """Refuse, before any I/O, a URL that is not http(s) or whose host is a refused address.

    ``url`` must be the very object handed to aiohttp: its ``raw_host`` is the normalised host
    aiohttp connects to. Names are left to the resolver and the socket factory.
    """
    host = url.raw_host
    if url.scheme not in ("http", "https") or not host or url.port is None:
        raise BlockedAddress(f"not an http(s) URL with a host: {url.scheme}")
    address = parse_address(host)
    if address is not None and not policy(address, url.port):
        raise BlockedAddress(host)


def _sockaddr_allowed(policy: AddressPolicy, host: str, port: int) -> bool:
    address = parse_address(host)
    return address is not None and policy(address, port)


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default, then refuses the name if any address is not allowed."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._inner = DefaultResolver()
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or not all(
            _sockaddr_allowed(self._policy, r["host"], r["port"]) for r in results
        ):
            raise BlockedAddress(host)
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(policy: AddressPolicy) -> Callable[[AddrInfoType], socket.socket]:
    """A connector ``socket_factory`` that refuses to create a socket for a refused address.

    aiohttp connects every socket it makes (whether the host was a name or an IP literal, on
    every redirect hop) to exactly the address given here, so nothing else is ever reached.
    """

    def create(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _canonical, sockaddr = addr_info
        if not _sockaddr_allowed(policy, str(sockaddr[0]), int(sockaddr[1])):
            raise BlockedAddress(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    return create
