"""Fetch remote images for providers that need them inline (the one I/O step before an adapter).

Adapters are pure, so a channel whose provider cannot take an image URL has the relay call
``inline_remote_images`` first: every ``image_url`` part with an http(s) URL is downloaded and
replaced by a base64 data URL.

The URLs are the tenant's, so the fetch is guarded (``media_guard``): only globally routable
addresses are connected to, checked where the connection is made, on every redirect hop,
unless the channel sets ``allow_private_image_urls``. Every way of not reaching a host —
refused by the guard, connection refused, no such name — gives the tenant the same answer, so
the error cannot be used to map internal ports. The request's fetches share one budget
(``image_fetch`` settings): a number of images, bytes per image and in total, counted as
received (bodies are never decompressed: ``Accept-Encoding: identity``, and a compressed
answer is refused), and a time limit inside the request's deadline.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
from yarl import URL

from sluice.core import RelayCall
from sluice.errors import InvalidRequest
from sluice.providers.configs import ImageInliningConfig
from sluice.providers.media_guard import (
    AddressPolicy,
    GuardedResolver,
    any_address,
    check_url,
    guarded_socket_factory,
    public_address,
)
from sluice.settings import ImageFetchConfig

__all__ = ["inline_remote_images"]

_MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {"Accept": "image/*", "Accept-Encoding": "identity"}
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_SNIFFED = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_UNREACHABLE = (
    "it could not be downloaded (the host is unreachable, or its address is private, loopback "
    "or link-local, which this channel does not allow)."
)


class _Unusable(Exception):
    """The host answered, but not with an image Sluice can use; the message says why."""


class _TooLarge(Exception):
    """One image is over ``max_image_bytes``."""


class _OverBudget(Exception):
    """The request's images together are over ``max_total_bytes``."""


@dataclass(slots=True)
class _Budget:
    limits: ImageFetchConfig
    bytes_left: int


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


def _refuse(param: str, reason: str, code: str = "invalid_image_url") -> InvalidRequest:
    return InvalidRequest(f"Could not use the image at '{param}': {reason}", param=param, code=code)


def _media_type(header: str | None, data: bytes) -> str | None:
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    kind = (header or "").split(";", 1)[0].strip().lower()
    # A type whose signature is known but absent is not that image (e.g. compressed bytes).
    return kind if kind.startswith("image/") and kind not in _SNIFFED else None


async def _read_capped(response: aiohttp.ClientResponse, budget: _Budget) -> bytes:
    cap = budget.limits.max_image_bytes
    declared = response.content_length
    if declared is not None:
        if declared > cap:
            raise _TooLarge
        if declared > budget.bytes_left:
            raise _OverBudget
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data.extend(chunk)
        if len(data) > cap:
            raise _TooLarge
        if len(data) > budget.bytes_left:
            raise _OverBudget
    budget.bytes_left -= len(data)
    return bytes(data)


async def _fetch(
    session: aiohttp.ClientSession, url: URL, policy: AddressPolicy, budget: _Budget
) -> bytes:
    """A data URL for ``url``; raises ``_Unusable``, ``_TooLarge``, ``_OverBudget``,
    ``OSError`` (``BlockedAddress`` among them), aiohttp errors or ``ValueError`` (a URL that
    cannot be parsed)."""
    for _ in range(_MAX_REDIRECTS + 1):
        check_url(url, policy)
        async with session.get(url, allow_redirects=False, headers=_HEADERS) as response:
            if response.status in _REDIRECTS and "location" in response.headers:
                url = url.join(URL(response.headers["location"]))
                continue
            if response.status != 200:
                raise _Unusable(f"the server answered HTTP {response.status}")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                # Asked for identity; decompressing would let a small body fill memory.
                raise _Unusable("the server sent it compressed (Content-Encoding), not as is")
            data = await _read_capped(response, budget)
            media_type = _media_type(response.headers.get("content-type"), data)
            if media_type is None:
                raise _Unusable("the response is not an image")
            return f"data:{media_type};base64,".encode() + base64.b64encode(data)
    raise _Unusable(f"more than {_MAX_REDIRECTS} redirects")


def _session(policy: AddressPolicy) -> aiohttp.ClientSession:
    # A short-lived session of its own: the shared upstream session must be able to reach
    # private addresses (local channels), so it cannot carry the guard. No proxy from the
    # environment (the socket would connect to the proxy, not to the checked address), no
    # cookies, no decompression.
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        socket_factory=guarded_socket_factory(policy),
        use_dns_cache=False,
        limit=8,
        force_close=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),  # the caller's budget bounds every fetch
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def _fetch_one(
    session: aiohttp.ClientSession,
    url: str,
    policy: AddressPolicy,
    budget: _Budget,
    param: str,
    ends: float,
) -> bytes:
    limits = budget.limits
    try:
        async with asyncio.timeout_at(ends):
            return await _fetch(session, URL(url), policy, budget)
    except TimeoutError:
        raise _refuse(
            param,
            f"fetching the request's images took longer than {limits.timeout_s:g}s.",
            "image_fetch_timeout",
        ) from None
    except _TooLarge:
        size = f"{limits.max_image_bytes / (1024 * 1024):g} MB"
        raise _refuse(param, f"the image is larger than {size}.") from None
    except _OverBudget:
        size = f"{limits.max_total_bytes / (1024 * 1024):g} MB"
        raise _refuse(
            param, f"the request's images together are larger than {size}.", "images_too_large"
        ) from None
    except (aiohttp.ClientError, OSError):
        # One answer for every way of not reaching the host (refused by the guard, refused
        # by the host, no such name, broken connection): no port scanning through errors.
        raise _refuse(param, _UNREACHABLE) from None
    except _Unusable as exc:
        raise _refuse(param, f"{exc}.") from None
    except ValueError:  # yarl cannot parse the URL (or a redirect's Location)
        raise _refuse(param, "it is not a valid URL.") from None


async def inline_remote_images(
    call: RelayCall,
    channel: ImageInliningConfig,
    limits: ImageFetchConfig | None = None,
    *,
    deadline: float | None = None,
    policy: AddressPolicy = public_address,
) -> RelayCall:
    """``call`` with remote image URLs replaced by data URLs (unchanged if there are none).

    ``deadline`` (event-loop time) is the request's; ``policy`` decides which addresses may be
    connected to (a channel with ``allow_private_image_urls`` allows any). Raises
    ``InvalidRequest`` (400) when an image cannot be used or the budget is exceeded.
    """
    targets = list(_remote_parts(call.body))
    if not targets:
        return call
    limits = limits or ImageFetchConfig()
    if len(targets) > limits.max_images:
        raise InvalidRequest(
            f"At most {limits.max_images} remote images are allowed in one request "
            f"({len(targets)} sent); send the others as data URLs.",
            param="messages",
            code="too_many_images",
        )
    if channel.allow_private_image_urls:
        policy = any_address
    loop = asyncio.get_running_loop()
    ends = loop.time() + limits.timeout_s
    if deadline is not None:
        ends = min(ends, deadline)
    budget = _Budget(limits, limits.max_total_bytes)
    fetched: list[bytes] = []
    async with _session(policy) as session:
        # One at a time: a refusal stops the rest, and no fetch outlives the session.
        for m, p, url in targets:
            param = f"messages[{m}].content[{p}].image_url.url"
            fetched.append(await _fetch_one(session, url, policy, budget, param, ends))
    return _with_data_urls(call, targets, fetched)


def _with_data_urls(call: RelayCall, targets: list[Any], fetched: list[bytes]) -> RelayCall:
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
