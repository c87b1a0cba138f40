"""X-Forwarded-For is believed only from ``trusted_proxies``; key IP allow-lists check the result.

The tests connect from 127.0.0.1. Each case names the address the gateway must settle on: a
key allowed only that address is served, and a key allowed only the address the client tried to
claim is refused (403 ``ip_not_allowed``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from sluice.forwarded import TrustedProxies
from sluice.settings import ConfigError, parse_settings
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import Gateway

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
PEER = "127.0.0.1"


@dataclass(frozen=True)
class Case:
    id: str
    trusted: tuple[str, ...]
    forwarded_for: tuple[str, ...]  # one X-Forwarded-For header per item
    client: str  # the address the gateway must use
    claimed: str | None = None  # an address the client tried to pass off, if any


# fmt: off
CASES = [
    Case("untrusted peer, spoofed", (), ("10.1.2.3",), PEER, claimed="10.1.2.3"),
    Case("untrusted peer, spoofed chain", ("192.168.0.0/16",), ("10.1.2.3, 192.168.1.1",),
         PEER, claimed="10.1.2.3"),
    Case("trusted peer", ("127.0.0.1",), ("203.0.113.7",), "203.0.113.7"),
    Case("trusted peer as a network", ("127.0.0.0/8",), ("203.0.113.7",), "203.0.113.7"),
    Case("client-supplied entries left of the client are ignored", ("127.0.0.1",),
         ("10.1.2.3, 203.0.113.7",), "203.0.113.7", claimed="10.1.2.3"),
    Case("two proxies", ("127.0.0.1", "192.168.0.0/16"), ("203.0.113.7, 192.168.1.5",),
         "203.0.113.7", claimed="192.168.1.5"),
    Case("three proxies and a spoofed prefix", ("127.0.0.1", "192.168.0.0/16", "172.16.0.0/12"),
         ("10.1.2.3, 203.0.113.7, 172.16.4.4, 192.168.1.5",), "203.0.113.7", claimed="10.1.2.3"),
    Case("an untrusted hop stops the walk", ("127.0.0.1",),
         ("203.0.113.7, 198.51.100.9",), "198.51.100.9", claimed="203.0.113.7"),
    Case("several headers form one list", ("127.0.0.1",), ("10.1.2.3", "203.0.113.7"),
         "203.0.113.7", claimed="10.1.2.3"),
    Case("port on an IPv4 entry", ("127.0.0.1",), ("203.0.113.7:4711",), "203.0.113.7"),
    Case("bracketed IPv6 with a port", ("127.0.0.1",), ("[2001:db8::7]:4711",), "2001:db8::7"),
    Case("bare IPv6", ("127.0.0.1",), ("2001:db8::7",), "2001:db8::7"),
    Case("garbage", ("127.0.0.1",), ("not-an-address",), PEER),
    Case("garbage right of a claim", ("127.0.0.1",), ("10.1.2.3, garbage",), PEER,
         claimed="10.1.2.3"),
    Case("empty entry", ("127.0.0.1",), ("10.1.2.3,,",), PEER, claimed="10.1.2.3"),
    Case("overlong header", ("127.0.0.1",), (", ".join(["10.1.2.3"] * 5000),), "10.1.2.3"),
    Case("script in the header", ("127.0.0.1",), ("<script>alert(1)</script>",), PEER),
]
# fmt: on


def status_for(gateway: Gateway, key: str, forwarded_for: tuple[str, ...]) -> int:
    headers = [("authorization", f"Bearer {key}")]
    headers += [("x-forwarded-for", value) for value in forwarded_for]
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers)
    if response.status_code == 403:
        assert response.json()["error"]["code"] == "ip_not_allowed"
    return response.status_code


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_allow_lists_see_the_right_most_untrusted_address(
    case: Case, gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = gateway_factory([openai_channel(fake_openai)], trusted_proxies=list(case.trusted))
    exact = gateway.create_key("exact", allowed_ips=[case.client])
    assert status_for(gateway, exact, case.forwarded_for) == 200
    if case.claimed is not None:
        claimed = gateway.create_key("claimed", allowed_ips=[case.claimed])
        assert status_for(gateway, claimed, case.forwarded_for) == 403


def test_uvicorn_forwarded_allow_ips_is_not_consulted(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    gateway = gateway_factory([openai_channel(fake_openai)])
    key = gateway.create_key("spoof-me", allowed_ips=["10.1.2.3"])
    assert status_for(gateway, key, ("10.1.2.3",)) == 403


@pytest.mark.parametrize(
    "entry", ["*", " * ", "0.0.0.0/0", "::/0", "not-a-network", "10.0.0.0/33", "", "1.2.3.4.5"]
)
def test_invalid_trusted_proxies_are_a_config_error(entry: str) -> None:
    everyone = entry.strip() in ("*", "0.0.0.0/0", "::/0")
    reason = "would trust every client" if everyone else "is not an IP address or CIDR network"
    with pytest.raises(ConfigError, match=f"trusted_proxies: '{re.escape(entry)}' {reason}"):
        parse_settings({"trusted_proxies": ["127.0.0.1", entry]})


def test_valid_trusted_proxies_are_accepted() -> None:
    cidrs = ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32", "192.168.1.7/24"]
    assert parse_settings({"trusted_proxies": cidrs}).trusted_proxies == cidrs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resolution_without_a_server(case: Case) -> None:
    trusted = TrustedProxies(case.trusted)
    assert trusted.client_of(PEER, ",".join(case.forwarded_for)) == case.client
