"""OpenAI's Videos API through Sluice, driven by the official SDK's ``client.videos``."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from openai import NotFoundError, OpenAI

from tests.conftest import GatewayFactory
from tests.fakes.videos_upstream import VIDEO_BYTES, VIDEOS_SECRET, FakeVideos
from tests.openapi_schema import validate_openai
from tests.support import LoopThread
from tests.tasks.conftest import FAST_TASKS, wait_for

# The SDK marks the Videos API deprecated (OpenAI's Sora API shut down on 2026-09-24); Sluice
# still relays it to the upstreams that serve it (Azure, other gateways).
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")

SORA_PER_SECOND = 100_000  # sora-2: $0.10 per second
PRO_PORTRAIT_PER_SECOND = 500_000  # sora-2-pro at 1024x1792: $0.50 per second


@pytest.fixture
def fake_videos(loop_thread: LoopThread) -> Iterator[FakeVideos]:
    fake = loop_thread.run(FakeVideos().start())
    yield fake
    loop_thread.run(fake.stop())


def _channel(fake: FakeVideos, kind: str = "openai", **overrides: Any) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "name": f"videos-{kind}",
        "type": kind,
        "base_url": fake.base_url if kind == "openai" else fake.azure_url,
        "api_key": VIDEOS_SECRET,
        "models": ["sora-2", "sora-2-pro"],
    }
    channel.update(overrides)
    return channel


def _completed(client: OpenAI, video_id: str) -> Any:
    return wait_for(
        lambda: (v := client.videos.retrieve(video_id)).status in ("completed", "failed") and v
    )


def test_a_video_made_and_downloaded_with_the_sdk(
    gateway_factory: GatewayFactory,
    fake_videos: FakeVideos,
    sdk: Callable[..., OpenAI],
) -> None:
    gateway = gateway_factory([_channel(fake_videos)], tasks=FAST_TASKS)
    key = gateway.create_key("video", budget_micro=10_000_000)
    client = sdk(gateway, key)
    reference = io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"x" * 200_000)
    video = client.videos.create(
        prompt="A calico cat playing a piano", model="sora-2", seconds="8",
        input_reference=("cat.png", reference, "image/png"),
    )  # fmt: skip
    assert video.id.startswith("video_") and video.id not in fake_videos.videos
    assert video.status in ("queued", "in_progress") and video.seconds == "8"
    (upstream,) = fake_videos.videos.values()
    assert upstream.reference_bytes == 200_008  # the upload reached the upstream whole
    assert gateway.key_record(key).spent_micro == 8 * SORA_PER_SECOND  # reserved as spend
    done = _completed(client, video.id)
    assert done.status == "completed" and done.progress == 100 and done.id == video.id
    validate_openai("VideoResource", done.model_dump(mode="json"))
    content = client.videos.download_content(video.id)
    assert content.content == VIDEO_BYTES
    listed = client.videos.list(limit=10)
    assert [v.id for v in listed.data] == [video.id]
    validate_openai("VideoListResource", listed.model_dump(mode="json"))
    deleted = client.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id and upstream.deleted
    with pytest.raises(NotFoundError):
        client.videos.retrieve(video.id)
    (row,) = gateway.usage_rows(key)
    assert (row["endpoint"], row["model"], row["cost_micro"]) == (
        "video.create", "sora-2", 8 * SORA_PER_SECOND
    )  # fmt: skip
    assert gateway.key_record(key).spent_micro == 8 * SORA_PER_SECOND


def test_price_by_size_refund_on_failure_and_isolation(
    gateway_factory: GatewayFactory, fake_videos: FakeVideos, sdk: Callable[..., OpenAI]
) -> None:
    gateway = gateway_factory([_channel(fake_videos, "azure")], tasks=FAST_TASKS)
    owner, other = gateway.create_key("owner"), gateway.create_key("other")
    client = sdk(gateway, owner)
    video = client.videos.create(
        prompt="this will fail", model="sora-2-pro", seconds="4", size="1024x1792"
    )
    assert gateway.key_record(owner).spent_micro == 4 * PRO_PORTRAIT_PER_SECOND
    with pytest.raises(NotFoundError):
        sdk(gateway, other).videos.retrieve(video.id)
    assert sdk(gateway, other).videos.list().data == []
    done = _completed(client, video.id)
    assert done.status == "failed" and done.error is not None
    validate_openai("VideoResource", done.model_dump(mode="json"))
    not_ready = httpx.get(
        f"{gateway.base_url}/videos/{video.id}/content",
        headers={"Authorization": f"Bearer {owner}"},
    )
    assert not_ready.status_code == 400 and not_ready.json()["error"]["code"] == "video_not_ready"
    (row,) = gateway.usage_rows(owner)
    assert (row["cost_micro"], row["status"], row["model"]) == (0, 502, "sora-2-pro")
    assert gateway.key_record(owner).spent_micro == 0


def test_deleting_a_running_video_cancels_and_releases_it(
    gateway_factory: GatewayFactory, fake_videos: FakeVideos, sdk: Callable[..., OpenAI]
) -> None:
    fake_videos.step_s = 30  # it stays queued
    gateway = gateway_factory([_channel(fake_videos)], tasks=FAST_TASKS)
    key = gateway.create_key("v")
    client = sdk(gateway, key)
    video = client.videos.create(prompt="long", seconds="4")
    assert gateway.key_record(key).spent_micro == 4 * SORA_PER_SECOND
    assert client.videos.delete(video.id).deleted
    (row,) = gateway.usage_rows(key)
    assert (row["cost_micro"], row["status"], row["error_code"]) == (0, 499, "task_cancelled")
    assert gateway.key_record(key).spent_micro == 0
    bad = httpx.post(
        f"{gateway.base_url}/videos",
        json={"prompt": "x", "seconds": "nine"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "seconds"
    unknown = httpx.post(
        f"{gateway.base_url}/videos",
        json={"prompt": "x", "model": "veo-9"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
