"""Fetch remote images for providers that need them inline (the one I/O step before an adapter).

Adapters are pure, so a channel whose provider cannot take an image URL has the relay call
``inline_remote_images`` first: every ``image_url`` part with an http(s) URL is downloaded and
replaced by a base64 data URL. The fetch is guarded against SSRF: private, loopback,
link-local, multicast and reserved addresses are refused unless the channel sets
``allow_private_image_urls``. The check runs inside the connector's DNS resolver, on the very
addresses the connection will use, so a name that re-resolves to an internal address between
check and connect (DNS rebinding) is still refused. Redirects are followed by hand (each hop
re-checked), bodies are capped in size and the whole fetch is bounded in time.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from dataclasses import replace
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from sluice.errors import InvalidRequest
from sluice.providers.base import RelayCall
from sluice.settings import ChannelConfig

__all__ = [
    "INLINE_IMAGE_CHANNEL_TYPES",
    "MAX_IMAGE_BYTES",
    "FETCH_TIMEOUT_S",
    "inline_remote_images",
    "needs_inlining",
]

# Channel types whose providers need image bytes rather than URLs.
INLINE_IMAGE_CHANNEL_TYPES = frozenset({"anthropic", "gemini"})
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Anthropic's per-image limit
FETCH_TIMEOUT_S = 10.0
_MAX_REDIRECTS = 3
_MAX_IMAGES = 20
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class _Refused(Exception):
    pass


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class _GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default, then refuses if any address is internal."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or not all(_address_allowed(r["host"]) for r in results):
            raise _Refused(host)
        return results

    async def close(self) -> None:
        await self._inner.close()


def needs_inlining(call: RelayCall) -> bool:
    return call.endpoint == "chat" and any(True for _ in _remote_parts(call.body))


def _remote_parts(body: dict[str, Any]) -> Any:
    """(message index, part index, url) of every image part with a remote URL."""
    messages = body.get("messages")
    for m_index, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for p_index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                if url.startswith(("http://", "https://")):
                    yield m_index, p_index, url


def _refuse(param: str, reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"Could not use the image at '{param}': {reason}", param=param, code="invalid_image_url"
    )


def _media_type(header: str | None, data: bytes) -> str | None:
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    kind = (header or "").split(";", 1)[0].strip().lower()
    return kind if kind.startswith("image/") else None


def _check_target(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Refused(url)
    if allow_private:
        return
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return  # a name: checked by the resolver at connect time
    # aiohttp skips the resolver for IP literals, so they are checked here.
    if not _address_allowed(str(literal)):
        raise _Refused(url)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    declared = response.content_length
    if declared is not None and declared > MAX_IMAGE_BYTES:
        raise ValueError("too large")
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data.extend(chunk)
        if len(data) > MAX_IMAGE_BYTES:
            raise ValueError("too large")
    return bytes(data)


async def _fetch(session: aiohttp.ClientSession, url: str, allow_private: bool) -> bytes:
    """Return a data URL for ``url``; raises ``_Refused`` / ``ValueError`` / aiohttp errors."""
    for _ in range(_MAX_REDIRECTS + 1):
        _check_target(url, allow_private)
        async with session.get(url, allow_redirects=False) as response:
            if response.status in (301, 302, 303, 307, 308) and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status != 200:
                raise ValueError(f"the server answered HTTP {response.status}")
            data = await _read_capped(response)
            media_type = _media_type(response.headers.get("content-type"), data)
            if media_type is None:
                raise ValueError("the response is not an image")
            return f"data:{media_type};base64,".encode() + base64.b64encode(data)
    raise ValueError("too many redirects")


def _session(allow_private: bool) -> aiohttp.ClientSession:
    # A short-lived session of its own: the shared upstream session must be able to reach
    # private addresses (local channels), so it cannot carry the guarded resolver.
    connector = aiohttp.TCPConnector(
        resolver=None if allow_private else _GuardedResolver(), limit=8, force_close=True
    )
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S, connect=FETCH_TIMEOUT_S)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True)


async def _fetch_one(
    session: aiohttp.ClientSession, url: str, allow_private: bool, param: str
) -> bytes:
    try:
        return await _fetch(session, url, allow_private)
    except _Refused:
        raise _refuse(
            param,
            "the URL points to a private, loopback or link-local address, which this channel "
            "does not allow.",
        ) from None
    except ValueError as exc:
        reason = str(exc)
        if reason == "too large":
            reason = f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB"
        raise _refuse(param, reason + ".") from None
    except TimeoutError:
        raise _refuse(param, f"fetching it took longer than {FETCH_TIMEOUT_S:g}s.") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise _refuse(param, f"fetching it failed ({type(exc).__name__}).") from None


async def inline_remote_images(call: RelayCall, channel: ChannelConfig) -> RelayCall:
    """``call`` with remote image URLs replaced by data URLs (unchanged if there are none).

    Raises ``InvalidRequest`` (400, code ``invalid_image_url``) when an image cannot be used.
    """
    targets = list(_remote_parts(call.body))
    if not targets:
        return call
    if len(targets) > _MAX_IMAGES:
        raise _refuse("messages", f"at most {_MAX_IMAGES} remote images are allowed.")
    allow_private = channel.allow_private_image_urls
    async with _session(allow_private) as session:
        # One at a time: a refusal stops the rest, and no fetch outlives the session.
        fetched = [
            await _fetch_one(
                session, url, allow_private, f"messages[{m}].content[{p}].image_url.url"
            )
            for m, p, url in targets
        ]
    messages = [dict(m) if isinstance(m, dict) else m for m in call.body["messages"]]
    for (m_index, p_index, _url), data_url in zip(targets, fetched, strict=True):
        content = list(messages[m_index]["content"])
        part = dict(content[p_index])
        image = part.get("image_url")
        part["image_url"] = {**(image if isinstance(image, dict) else {}), "url": data_url.decode()}
        content[p_index] = part
        messages[m_index]["content"] = content
    body = {**call.body, "messages": messages}
    return replace(call, body=body, raw_body=orjson.dumps(body))
