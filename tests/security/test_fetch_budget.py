"""The image-fetch budget of one request: how many images, how many bytes (as received, never
decompressed) and how much time (inside the request's deadline) a tenant's URLs may cost.

Every case goes through the gateway to a channel that allows private image URLs (the image
server is on loopback), so what is refused here is refused by the budget, not the SSRF guard.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.security.image_support import (
    ImageServer,
    ask_with_images,
    claude_gateway,
    image_server,
)

__all__ = ["image_server"]  # fixture, imported for pytest

MiB = 1024 * 1024


def _error(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


# --- count ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("configured", "sent"), [(None, 21), (2, 3)])
def test_too_many_images(
    gateway_factory: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    image_server: ImageServer,
    configured: int | None,
    sent: int,
) -> None:
    extra = {} if configured is None else {"image_fetch": {"max_images": configured}}
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True, **extra)
    response = ask_with_images(gateway, *[image_server.url(f"/{i}.png") for i in range(sent)])
    error = _error(response)
    assert error["code"] == "too_many_images"
    assert error["param"] == "messages"
    assert f"At most {configured or 20} remote images" in error["message"]
    assert image_server.hits == 0, "images were fetched before the count was checked"
    assert fake_anthropic.received == []


def test_as_many_images_as_allowed_are_fetched(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, image_server: ImageServer
) -> None:
    extra = {"image_fetch": {"max_images": 2}}
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True, **extra)
    response = ask_with_images(gateway, image_server.url("/a.png"), image_server.url("/b.png"))
    assert response.status_code == 200, response.text
    assert image_server.hits == 2


# --- compression ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/bomb.png", "/small-gzip.png"])
def test_compressed_images_are_not_decompressed(
    gateway_factory: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    image_server: ImageServer,
    path: str,
) -> None:
    """``/bomb.png``: 10 MiB of PNG-headed zeros gzip-compressed to ~10 KiB, sent with
    ``Content-Encoding: gzip``. ``/small-gzip.png``: the same trick, small enough when
    decompressed to pass as a PNG — a fetcher that decompresses would accept it."""
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True)
    response = ask_with_images(gateway, image_server.url(path))
    assert image_server.accept_encodings == ["identity"]
    error = _error(response)
    assert error["code"] == "invalid_image_url"
    assert "compressed" in error["message"]
    assert fake_anthropic.received == []


def test_compressed_bytes_without_content_encoding_are_not_an_image(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, image_server: ImageServer
) -> None:
    """The bomb's bytes labelled ``image/png`` but not declared compressed: gzip is not PNG,
    whatever the Content-Type says."""
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True)
    response = ask_with_images(gateway, image_server.url("/bomb-plain.png"))
    error = _error(response)
    assert error["code"] == "invalid_image_url"
    assert "not an image" in error["message"]
    assert fake_anthropic.received == []


# --- bytes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "sizes"),
    [
        (None, [int(4.5 * MiB)] * 5),  # defaults: 5 MiB each, 20 MiB together
        ({"max_image_bytes": 64 * 1024, "max_total_bytes": 100 * 1024}, [40 * 1024] * 3),
    ],
    ids=["defaults", "configured"],
)
def test_total_bytes_over_the_budget(
    gateway_factory: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    image_server: ImageServer,
    settings: dict[str, int] | None,
    sizes: list[int],
) -> None:
    extra = {} if settings is None else {"image_fetch": settings}
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True, **extra)
    response = ask_with_images(gateway, *[image_server.url(f"/sized/{n}.png") for n in sizes])
    error = _error(response)
    assert error["code"] == "images_too_large"
    assert "together are larger than" in error["message"]
    assert fake_anthropic.received == []


def test_one_image_over_its_own_cap(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, image_server: ImageServer
) -> None:
    extra = {"image_fetch": {"max_image_bytes": 64 * 1024}}
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True, **extra)
    response = ask_with_images(gateway, image_server.url(f"/sized/{65 * 1024}.png"))
    error = _error(response)
    assert error["code"] == "invalid_image_url"
    assert "larger than 0.0625 MB" in error["message"]


# --- time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"image_fetch": {"timeout_s": 0.5}},
        {"retry": {"deadline_s": 0.5}},  # the request's deadline cuts it too
    ],
    ids=["image_fetch.timeout_s", "retry.deadline_s"],
)
def test_a_slow_image_server_is_cut_by_the_time_budget(
    gateway_factory: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    image_server: ImageServer,
    extra: dict[str, Any],
) -> None:
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True, **extra)
    started = time.monotonic()
    response = ask_with_images(gateway, image_server.url("/slow.png"))
    elapsed = time.monotonic() - started
    error = _error(response)
    assert error["code"] == "image_fetch_timeout"
    assert elapsed < 5, f"the fetch ran {elapsed:.1f}s"
    assert fake_anthropic.received == []


def test_the_time_budget_is_for_all_images_together(
    gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, image_server: ImageServer
) -> None:
    """Each image answers in 0.4 s, well inside the budget alone; four of them are not."""
    extra = {"image_fetch": {"timeout_s": 1.0}}
    gateway = claude_gateway(gateway_factory, fake_anthropic, allow_private=True, **extra)
    urls = [image_server.url(f"/delayed/{i}.png") for i in range(4)]
    started = time.monotonic()
    response = ask_with_images(gateway, *urls)
    elapsed = time.monotonic() - started
    error = _error(response)
    assert error["code"] == "image_fetch_timeout"
    assert error["param"] != "messages[0].content[1].image_url.url"
    assert elapsed < 4
