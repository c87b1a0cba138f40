"""Runtime channels: created, edited and deleted through the admin API, stored with the upstream
key encrypted, served at once, and seen by a second gateway on the same database within 1 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sluice.storage.schema import runtime_channels
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.scale.conftest import pg_url as pg_url
from tests.support import ADMIN_KEY, Gateway, LoopThread, make_settings, start_gateway

UPSTREAM_KEY = "sk-runtime-UPSTREAM-secret-0987654321"
CHAT = {"model": "rt-model", "messages": [{"role": "user", "content": "hi"}]}


def _admin(gateway: Gateway) -> httpx.Client:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.Client(base_url=gateway.url, headers=headers, timeout=10)


def _channel(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "name": "rt",
        "type": "openai-compatible",
        "base_url": fake.base_url,
        "api_key": UPSTREAM_KEY,
        "models": ["rt-model"],
        **extra,
    }


@pytest.fixture
def bare(gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory([], pricing={"overrides": {"rt-*": {"input": 1.0, "output": 2.0}}})


def _chat(gateway: Gateway, key: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=auth, timeout=10)


def test_create_serve_edit_delete(bare: Gateway, fake_openai: FakeOpenAI) -> None:
    key = bare.create_key()
    assert _chat(bare, key).status_code == 404  # no channel serves the model yet
    with _admin(bare) as admin:
        created = admin.post("/admin/channels", json=_channel(fake_openai))
        assert created.status_code == 201, created.text
        assert UPSTREAM_KEY not in created.text
        assert created.json()["source"] == "runtime" and created.json()["api_key"] == "sk-…21"
        served = _chat(bare, key)
        assert served.status_code == 200, served.text
        assert fake_openai.received[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"

        listed = admin.get("/admin/channels")
        assert UPSTREAM_KEY not in listed.text
        assert [c["name"] for c in listed.json()["data"]] == ["rt"]

        again = admin.post("/admin/channels", json=_channel(fake_openai))
        assert again.status_code == 400 and again.json()["error"]["code"] == "channel_exists"
        bad = admin.post("/admin/channels", json=_channel(fake_openai, weight=-1))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "weight"
        unknown_type = admin.post("/admin/channels", json=_channel(fake_openai, type="nope"))
        assert unknown_type.status_code == 400

        edited = admin.patch("/admin/channels/rt", json={"models": ["rt-other"]})
        assert edited.status_code == 200 and edited.json()["models"] == ["rt-other"]
        assert _chat(bare, key).status_code == 404  # the model moved away at once
        # the key was kept although the edit did not repeat it
        admin.patch("/admin/channels/rt", json={"models": ["rt-model"]})
        assert _chat(bare, key).status_code == 200
        assert fake_openai.received[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"

        disabled = admin.post("/admin/channels/rt/disable")
        assert disabled.json()["health"]["state"] == "disabled"
        assert _chat(bare, key).status_code == 503
        admin.post("/admin/channels/rt/enable")

        assert admin.delete("/admin/channels/rt").json()["deleted"] is True
        assert admin.delete("/admin/channels/rt").status_code == 404
        assert admin.patch("/admin/channels/rt", json={}).status_code == 404
    assert _chat(bare, key).status_code == 404


def test_upstream_key_is_encrypted_at_rest(bare: Gateway, fake_openai: FakeOpenAI) -> None:
    with _admin(bare) as admin:
        assert admin.post("/admin/channels", json=_channel(fake_openai)).status_code == 201

    async def stored() -> list[Any]:
        async with bare.state.engine.connect() as conn:
            return list((await conn.execute(select(runtime_channels))).mappings().all())

    rows = bare.call(stored())
    assert len(rows) == 1
    for value in rows[0].values():
        assert UPSTREAM_KEY not in str(value)
    assert rows[0]["api_key_enc"].startswith("gAAAA")  # a Fernet token
    database = Path(bare.state.settings.database_url.split("///", 1)[1])
    assert UPSTREAM_KEY.encode() not in database.read_bytes()
    key_file = database.parent / "secrets_key"
    assert key_file.stat().st_mode & 0o077 == 0


def test_yaml_channels_are_read_only(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = gateway_factory([openai_channel(fake_openai)])
    with _admin(gateway) as admin:
        clash = admin.post("/admin/channels", json=_channel(fake_openai, name="fake-openai"))
        assert clash.status_code == 400
        edit = admin.patch("/admin/channels/fake-openai", json={"weight": 3})
        assert edit.status_code == 400 and edit.json()["error"]["code"] == "channel_read_only"
        assert admin.delete("/admin/channels/fake-openai").status_code == 404
        local = admin.post("/admin/channels", json={"name": "l", "type": "local"})
        assert local.status_code == 400 and local.json()["error"]["param"] == "type"


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Settings for replicas sharing one database; with PostgreSQL the secrets key comes
    from the environment, as every replica must have the same one."""
    extra: dict[str, Any] = {"pricing": {"overrides": {"rt-*": {"input": 1.0, "output": 2.0}}}}
    if request.param == "postgresql":
        extra["database_url"] = request.getfixturevalue("pg_url")
        monkeypatch.setenv("SLUICE_SECRETS_KEY", "replicas-share-this-secrets-key-0123456789")
    return extra


def test_second_gateway_sees_a_change_within_a_second(
    loop_thread: LoopThread,
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    shared_database: dict[str, Any],
) -> None:
    first = start_gateway(loop_thread, make_settings(tmp_path, [], **shared_database))
    second = start_gateway(loop_thread, make_settings(tmp_path, [], **shared_database))
    try:
        key = first.create_key()
        with _admin(first) as admin:
            assert admin.post("/admin/channels", json=_channel(fake_openai)).status_code == 201
        started = time.monotonic()
        while _chat(second, key).status_code != 200:
            assert time.monotonic() - started < 1.0, "the second gateway never saw the channel"
            time.sleep(0.05)
        with _admin(first) as admin:
            assert admin.delete("/admin/channels/rt").status_code == 200
        started = time.monotonic()
        while _chat(second, key).status_code != 404:
            assert time.monotonic() - started < 1.0, "the second gateway kept the channel"
            time.sleep(0.05)
    finally:
        first.stop()
        second.stop()


def test_stored_channels_load_at_start(
    loop_thread: LoopThread, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    pricing = {"overrides": {"rt-*": {"input": 1.0, "output": 2.0}}}
    first = start_gateway(loop_thread, make_settings(tmp_path, [], pricing=pricing))
    with _admin(first) as admin:
        assert admin.post("/admin/channels", json=_channel(fake_openai)).status_code == 201
    key = first.create_key()
    first.stop()
    restarted = start_gateway(loop_thread, make_settings(tmp_path, [], pricing=pricing))
    try:
        assert _chat(restarted, key).status_code == 200
    finally:
        restarted.stop()


@pytest.fixture(autouse=True)
def _no_env_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SLUICE_SECRETS_KEY", raising=False)  # the generated key file is tested
    yield


def test_unusable_secrets_key_is_a_503(
    loop_thread: LoopThread, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secrets_key").write_text("")  # empty: nothing to encrypt with
    settings = make_settings(data, [])
    gateway = start_gateway(loop_thread, settings)
    try:
        with _admin(gateway) as admin:
            reply = admin.post("/admin/channels", json=_channel(fake_openai))
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "secrets_key_unavailable"
        assert UPSTREAM_KEY not in reply.text
    finally:
        gateway.stop()
