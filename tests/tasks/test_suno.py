"""Suno through Sluice (Suno-API protocol): a song and lyrics, isolation, failure refunded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.suno_upstream import AUDIO_BYTES, SUNO_SECRET, FakeSuno
from tests.support import Gateway, LoopThread
from tests.tasks.conftest import FAST_TASKS, client, wait_for

MUSIC_PRICE, LYRICS_PRICE = 100_000, 10_000


@pytest.fixture
def fake_suno(loop_thread: LoopThread) -> Iterator[FakeSuno]:
    fake = loop_thread.run(FakeSuno().start())
    yield fake
    loop_thread.run(fake.stop())


def _gateway(factory: GatewayFactory, fake: FakeSuno, **overrides: Any) -> Gateway:
    channel = {
        "name": "suno",
        "type": "suno-api",
        "base_url": fake.base_url,
        "api_key": SUNO_SECRET,
        "poll_interval_s": 0.1,
        **overrides,
    }
    return factory([channel], tasks=FAST_TASKS)


def _finished(http: httpx.Client, task_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        answer = http.get(f"/suno/fetch/{task_id}").json()
        assert answer["code"] == "success"
        task: dict[str, Any] = answer["data"]
        return task if task["status"] in ("SUCCESS", "FAILURE") else None

    found: dict[str, Any] = wait_for(check)
    return found


def test_a_song_and_lyrics(gateway_factory: GatewayFactory, fake_suno: FakeSuno) -> None:
    gateway = _gateway(gateway_factory, fake_suno, proxy_results=True)
    key = gateway.create_key("suno", budget_micro=1_000_000)
    with client(gateway, key) as http:
        submitted = http.post(
            "/suno/submit/music",
            json={"prompt": "[Verse] hello", "tags": "pop", "mv": "chirp-v4", "title": "Hi"},
        ).json()
        assert submitted["code"] == "success"
        song_id = submitted["data"]
        assert song_id not in fake_suno.tasks
        assert fake_suno.submits[0][1]["tags"] == "pop"  # the body is forwarded
        song = _finished(http, song_id)
        lyrics_id = http.post("/suno/submit/lyrics", json={"prompt": "rain"}).json()["data"]
        lyrics = _finished(http, lyrics_id)
        both = http.post("/suno/fetch", json={"ids": [song_id, lyrics_id]}).json()
    assert song["status"] == "SUCCESS" and song["task_id"] == song_id
    assert song["action"] == "MUSIC" and len(song["data"]) == 2
    text = orjson.dumps(song).decode()
    assert "suno-up" not in text and "upstream-account" not in text
    audio = song["data"][0]["audio_url"]
    assert audio.startswith(f"{gateway.url}/tasks/{song_id}/content/")
    streamed = httpx.get(audio)
    assert streamed.status_code == 200 and streamed.content == AUDIO_BYTES
    assert lyrics["data"]["text"].startswith("[Verse]")
    assert sorted(t["task_id"] for t in both["data"]) == sorted([song_id, lyrics_id])
    rows = gateway.usage_rows(key)
    assert [(r["endpoint"], r["model"], r["cost_micro"]) for r in rows] == [
        ("suno.music", "suno-music", MUSIC_PRICE),
        ("suno.lyrics", "suno-lyrics", LYRICS_PRICE),
    ]
    assert gateway.key_record(key).spent_micro == MUSIC_PRICE + LYRICS_PRICE


def test_failed_song_is_free_and_others_cannot_see_it(
    gateway_factory: GatewayFactory, fake_suno: FakeSuno
) -> None:
    gateway = _gateway(gateway_factory, fake_suno)
    owner, other = gateway.create_key("owner"), gateway.create_key("other")
    with client(gateway, owner) as http:
        task_id = http.post("/suno/submit/music", json={"prompt": "fail please"}).json()["data"]
        assert http.post("/suno/submit/music", json={}).status_code == 400
        with client(gateway, other) as stranger:
            hidden = stranger.get(f"/suno/fetch/{task_id}")
            assert hidden.status_code == 404 and hidden.json()["code"] == "task_not_exist"
            assert stranger.post("/suno/fetch", json={"ids": [task_id]}).json()["data"] == []
        done = _finished(http, task_id)
    assert done["status"] == "FAILURE" and done["fail_reason"] == "generation failed"
    (row,) = gateway.usage_rows(owner)
    assert (row["cost_micro"], row["status"]) == (0, 502)
    assert gateway.key_record(owner).spent_micro == 0


def test_upstream_callbacks_finish_a_song_without_polls(
    gateway_factory: GatewayFactory, fake_suno: FakeSuno
) -> None:
    channel = {
        "name": "suno", "type": "suno-api", "base_url": fake_suno.base_url,
        "api_key": SUNO_SECRET, "poll_interval_s": 600, "upstream_callbacks": True,
    }  # fmt: skip
    gateway = gateway_factory([channel], tasks=FAST_TASKS)
    state = gateway.state
    tasks = msgspec.structs.replace(state.settings.tasks, public_url=gateway.url)
    state.settings = msgspec.structs.replace(state.settings, tasks=tasks)
    key = gateway.create_key("suno")
    with client(gateway, key) as http:
        task_id = http.post("/suno/submit/music", json={"prompt": "by callback"}).json()["data"]
        hook = fake_suno.submits[0][1]["notify_hook"]
        assert hook.startswith(f"{gateway.url}/tasks/callback/{task_id}/")
        assert _finished(http, task_id)["status"] == "SUCCESS"
    assert fake_suno.fetches == 0
    assert [r["cost_micro"] for r in gateway.usage_rows(key)] == [MUSIC_PRICE]
