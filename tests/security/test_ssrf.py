"""SSRF: an image URL a tenant sends must never make Sluice connect to an internal address.

The guard is judged by its effect: a real image server on loopback, reachable by every notation
below, must see no request at all (its hit counter stays 0); nothing may even be attempted
beyond loopback (``no_outbound`` records and refuses such connects, so a broken guard cannot
send a packet off this machine); and the client gets one and the same 400 for each notation,
so errors cannot tell an open internal port from a refused one. With the channel's
``allow_private_image_urls`` the same server *is* fetched: the refusals come from the guard, not
from a fetcher that cannot fetch.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from sluice.core import RelayCall
from sluice.errors import InvalidRequest
from sluice.providers import media
from sluice.providers.configs import AnthropicConfig
from sluice.providers.media_guard import IPAddress, public_address
from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.security.image_support import (
    ImageServer,
    OutboundAttempts,
    ask_with_images,
    claude_gateway,
    image_server,
    no_outbound,
)
from tests.support import LoopThread

__all__ = ["image_server", "no_outbound"]  # fixtures, imported for pytest

PARAM = "messages[0].content[1].image_url.url"
REFUSAL = {
    "message": f"Could not use the image at '{PARAM}': it could not be downloaded (the host is "
    "unreachable, or its address is private, loopback or link-local, which this channel does "
    "not allow).",
    "type": "invalid_request_error",
    "param": PARAM,
    "code": "invalid_image_url",
}

# Hosts that all mean this machine (the image server listens on 127.0.0.1 and ::1).
LOOPBACK_HOSTS = {
    "dotted": "127.0.0.1",
    "full-width digits": "１２７．０．０．１",
    "ideographic full stops": "127。0。0。1",
    "decimal integer": "2130706433",
    "hex integer": "0x7f000001",
    "hex dotted": "0x7f.0.0.1",
    "octal dotted": "0177.0.0.1",
    "short form": "127.1",
    "other 127/8 address": "127.0.0.2",
    "trailing dot": "127.0.0.1.",
    "ipv6 loopback": "[::1]",
    "ipv4-mapped ipv6": "[::ffff:127.0.0.1]",
    "ipv4-mapped ipv6 hex": "[::ffff:7f00:1]",
    "ipv4-compatible ipv6": "[::127.0.0.1]",
    "unspecified": "0.0.0.0",
    "localhost": "localhost",
    "localhost trailing dot": "localhost.",
    "localhost upper case": "LOCALHOST",
}
# Internal addresses elsewhere: no server there, so only the refusal and the absence of any
# connection attempt can be checked (and no_outbound keeps a failing guard from going out).
INTERNAL_URLS = {
    "cloud metadata": "http://169.254.169.254/latest/meta-data/",
    "cloud metadata hex": "http://0xa9fea9fe/latest/meta-data/",
    "shared 100.64/10 metadata": "http://100.100.100.200/latest/meta-data/",
    "private 10/8": "http://10.0.0.1/x.png",
    "private 172.16/12": "http://172.16.0.1/x.png",
    "private 192.168/16": "http://192.168.1.1/x.png",
    "ipv6 unique local": "http://[fd00::1]/x.png",
    "ipv6 link-local with zone": "http://[fe80::1%25eth0]/x.png",
    "nat64 of metadata": "http://[64:ff9b::a9fe:a9fe]/x.png",
    "6to4 of private": "http://[2002:a00:1::]/x.png",
    "multicast": "http://224.0.0.1/x.png",
    "broadcast": "http://255.255.255.255/x.png",
}
# Notations aiohttp itself can fetch when private targets are allowed (it refuses the legacy
# numeric IPv4 forms outright, so those have no positive control).
FETCHABLE = [
    "dotted",
    "full-width digits",
    "ideographic full stops",
    "hex dotted",
    "localhost",
    "unspecified",
]


def loopback_url(server: ImageServer, name: str) -> str:
    return server.url("/img.png", host=LOOPBACK_HOSTS[name])


# --- through the gateway ------------------------------------------------------------------------


def _assert_refused(response: Any) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"error": REFUSAL}


@pytest.mark.parametrize("name", list(LOOPBACK_HOSTS))
def test_loopback_notations_are_refused_without_contact(
    gateway_factory: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    image_server: ImageServer,
    no_outbound: OutboundAttempts,
    name: str,
) -> None:
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=False)
    response = ask_with_images(gateway, loopback_url(image_server, name))
    assert image_server.hits == 0, f"{name}: the internal server was contacted"
    assert fake_anthropic.received == []
    assert list(no_outbound) == []
    _assert_refused(response)


@pytest.mark.parametrize("name", list(INTERNAL_URLS))
def test_internal_addresses_are_refused_without_any_attempt(
    gateway_factory: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    no_outbound: OutboundAttempts,
    name: str,
) -> None:
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=False)
    response = ask_with_images(gateway, INTERNAL_URLS[name])
    assert list(no_outbound) == [], f"{name}: a connection beyond loopback was attempted"
    assert fake_anthropic.received == []
    _assert_refused(response)


@pytest.mark.parametrize("name", FETCHABLE)
def test_allow_private_channel_fetches_the_same_server(
    gateway_factory: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    image_server: ImageServer,
    no_outbound: OutboundAttempts,
    name: str,
) -> None:
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True)
    response = ask_with_images(gateway, loopback_url(image_server, name))
    assert response.status_code == 200, response.text
    assert image_server.hits == 1
    source = fake_anthropic.received[0].body["messages"][0]["content"][1]["source"]
    assert source["type"] == "base64" and source["media_type"] == "image/png"


def test_closed_internal_port_and_blocked_open_port_answer_alike(
    gateway_factory: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    image_server: ImageServer,
    no_outbound: OutboundAttempts,
) -> None:
    """An open internal port (the image server) and a closed one (port 9, discard) must give
    the tenant identical answers, or errors become a port scanner."""
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=False)
    open_port = ask_with_images(gateway, image_server.url())
    closed_port = ask_with_images(gateway, "http://127.0.0.1:9/img.png")
    assert (open_port.status_code, open_port.json()) == (
        closed_port.status_code,
        closed_port.json(),
    )
    assert image_server.hits == 0


# --- redirects: every hop is checked --------------------------------------------------------------


def _call_with(url: str) -> RelayCall:
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    return RelayCall("chat", "/chat/completions", body, b"{}", "m", "m", False, False)


def _treating_as_public(*ports: int) -> Any:
    """The production policy, plus the given loopback ports standing in for public hosts."""
    loopback = ipaddress.IPv4Address("127.0.0.1")

    def policy(ip: IPAddress, port: int) -> bool:
        return public_address(ip, port) or (ip == loopback and port in ports)

    return policy


@pytest.fixture
def redirector(loop_thread: LoopThread) -> Any:
    server = loop_thread.run(ImageServer().start())
    yield server
    assert server.runner is not None
    loop_thread.run(server.runner.cleanup())


# ASCII notations: a Location header is bytes, and aiohttp's own server sends ASCII only.
REDIRECT_HOSTS = [
    "dotted",
    "decimal integer",
    "hex dotted",
    "short form",
    "ipv6 loopback",
    "ipv4-mapped ipv6",
    "unspecified",
    "localhost",
]


@pytest.mark.parametrize("name", REDIRECT_HOSTS)
def test_redirect_from_a_public_host_to_loopback_is_refused(
    loop_thread: LoopThread,
    image_server: ImageServer,
    redirector: ImageServer,
    no_outbound: OutboundAttempts,
    name: str,
) -> None:
    target = loopback_url(image_server, name)
    first_hop = redirector.url("/redirect") + "?to=" + target
    channel = AnthropicConfig(name="strict")
    policy = _treating_as_public(redirector.port)
    with pytest.raises(InvalidRequest) as caught:
        loop_thread.run(media.inline_remote_images(_call_with(first_hop), channel, policy=policy))
    assert redirector.paths == ["/redirect"], "the 'public' first hop was fetched"
    assert image_server.hits == 0, "the redirect reached the internal server"
    assert caught.value.http_status == 400
    assert caught.value.to_dict() == {"error": REFUSAL}


def test_redirect_to_an_allowed_host_is_followed(
    loop_thread: LoopThread, image_server: ImageServer, redirector: ImageServer
) -> None:
    """Control for the test above: the same redirect, with its target allowed, is fetched."""
    first_hop = redirector.url("/redirect") + "?to=" + image_server.url()
    channel = AnthropicConfig(name="strict")
    policy = _treating_as_public(redirector.port, image_server.port)
    out = loop_thread.run(media.inline_remote_images(_call_with(first_hop), channel, policy=policy))
    assert out.body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png")
    assert image_server.hits == 1


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert public_address(ipaddress.ip_address(address), 443)


def test_redirect_chains_are_bounded(loop_thread: LoopThread, redirector: ImageServer) -> None:
    """A host that redirects to itself forever costs at most four requests."""
    loop_url = redirector.url("/loop")
    channel = AnthropicConfig(name="strict")
    policy = _treating_as_public(redirector.port)
    with pytest.raises(InvalidRequest) as caught:
        loop_thread.run(media.inline_remote_images(_call_with(loop_url), channel, policy=policy))
    assert "more than 3 redirects" in caught.value.message
    assert redirector.hits == 4


# --- the connection-level check on its own ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["dotted", "full-width digits", "ideographic full stops", "ipv4-mapped ipv6", "localhost"],
)
def test_the_connection_is_refused_even_without_the_url_check(
    loop_thread: LoopThread,
    image_server: ImageServer,
    no_outbound: OutboundAttempts,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """With the URL pre-check disabled, the socket factory (IP literals never reach aiohttp's
    resolver) and the resolver (names) still keep the connection from being made."""
    monkeypatch.setattr(media, "check_url", lambda url, policy: None)
    channel = AnthropicConfig(name="strict")
    call = _call_with(loopback_url(image_server, name))
    with pytest.raises(InvalidRequest) as caught:
        loop_thread.run(media.inline_remote_images(call, channel))
    assert image_server.hits == 0
    assert list(no_outbound) == []
    assert caught.value.to_dict() == {"error": REFUSAL}


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "100.64.0.1",
        "169.254.169.254",
        "192.0.2.1",
        "0.0.0.0",
        "224.0.0.251",
        "::1",
        "::",
        "fe80::1%eth0",
        "fd12:3456::1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "ff02::1",
    ],
)
def test_default_policy_refuses(address: str) -> None:
    assert not public_address(ipaddress.ip_address(address), 443)
