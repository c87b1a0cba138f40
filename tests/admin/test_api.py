"""Admin REST API: keys lifecycle, usage reports, channels (masked), channel test, reload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from sluice.settings import load_settings
from sluice.storage.usage_sink import UsageRow
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import ADMIN_KEY, Gateway, LoopThread, start_gateway

UPSTREAM_SECRET = "sk-upstream-SECRET-do-not-leak-123456"
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def admin(gateway: Gateway) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client:
        yield client


def test_admin_requires_the_admin_key(gateway: Gateway) -> None:
    key = gateway.create_key()
    for headers in ({}, {"Authorization": f"Bearer {key}"}, {"Authorization": "Basic x"}):
        response = httpx.get(f"{gateway.url}/admin/keys", headers=headers)
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_key_lifecycle(gateway: Gateway, admin: httpx.Client) -> None:
    created = admin.post(
        "/admin/keys",
        json={
            "name": "bob",
            "budget_usd": 3,
            "models": ["test-*"],
            "rpm": 10,
            "expires_at": "2031-01-01T00:00:00Z",
        },  # fmt: skip
    )
    assert created.status_code == 201
    body = created.json()
    secret, key_id = body["key"], body["id"]
    assert secret.startswith("sk-") and body["prefix"] == secret[:8]
    assert body["expires_at"] == 1924992000.0
    auth = {"Authorization": f"Bearer {secret}"}
    assert (
        httpx.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=auth).status_code
        == 200
    )

    listed = admin.get("/admin/keys").json()["data"]
    assert [k["name"] for k in listed] == ["bob"] and "key" not in listed[0]
    assert "key_hash" not in listed[0]
    shown = admin.get(f"/admin/keys/{key_id}").json()
    assert shown["spent_usd"] > 0, "spend includes settled requests not yet flushed"

    patched = admin.patch(f"/admin/keys/{key_id}", json={"budget_usd": None, "rpm": None})
    assert patched.json()["budget_usd"] is None and patched.json()["rpm"] is None
    assert admin.post(f"/admin/keys/{key_id}/disable").json()["disabled"] is True
    refused = httpx.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=auth)
    assert refused.status_code == 401, "admin changes apply at once on this replica"
    assert admin.post("/admin/keys/bob/enable").json()["disabled"] is False
    assert admin.delete(f"/admin/keys/{key_id}").json()["deleted"] is True
    assert admin.get(f"/admin/keys/{key_id}").status_code == 404
    assert (
        httpx.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=auth).status_code
        == 401
    )


def test_admin_validation_errors(admin: httpx.Client) -> None:
    invalid: list[tuple[dict[str, object], str | None]] = [  # body, the field the error names
        ({"budget_usd": 1}, None),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "rpm": "5"}, "rpm"),  # strict: a JSON string is not a number
        ({"name": "x", "allowed_ips": ["nope"]}, "allowed_ips"),
        ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "colour": "red"}, None),
    ]
    for bad, param in invalid:
        response = admin.post("/admin/keys", json=bad)
        assert response.status_code == 400, bad
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param, bad


def test_usage_report_filters_and_groups(gateway: Gateway, admin: httpx.Client) -> None:
    alice = gateway.create_key("alice")
    bob = gateway.create_key("bob")
    for key, model, times in ((alice, "test-a", 2), (alice, "test-b", 1), (bob, "test-a", 3)):
        for _ in range(times):
            response = httpx.post(
                f"{gateway.base_url}/chat/completions",
                json={**CHAT, "model": model},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200
    by_model = admin.get("/admin/usage", params={"group_by": "model"}).json()["data"]
    assert {r["model"]: r["requests"] for r in by_model} == {"test-a": 5, "test-b": 1}
    alice_only = admin.get("/admin/usage", params={"key": "alice", "group_by": "model"}).json()
    assert {r["model"]: r["requests"] for r in alice_only["data"]} == {"test-a": 2, "test-b": 1}
    by_day = admin.get("/admin/usage", params={"group_by": "day"}).json()["data"]
    assert len(by_day) == 1 and by_day[0]["requests"] == 6 and len(by_day[0]["day"]) == 10
    total = admin.get("/admin/usage", params={"since": "2000-01-01"}).json()["data"][0]
    assert total["requests"] == 6 and total["cost_micro"] == 6 * 23
    assert admin.get("/admin/usage", params={"group_by": "colour"}).status_code == 400


def test_channels_are_listed_masked_and_testable(
    gateway: Gateway, admin: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    response = admin.get("/admin/channels")
    assert UPSTREAM_SECRET not in response.text
    channel = response.json()["data"][0]
    assert channel["name"] == "fake-openai" and channel["status"] == "active"
    assert channel["api_key"].startswith("sk-") and "SECRET" not in channel["api_key"]
    probe = admin.post("/admin/channels/fake-openai/test").json()
    assert probe["ok"] is True and probe["model"] == "gpt-4o-mini"
    assert fake_openai.received[-1].body["max_tokens"] == 1
    assert admin.post("/admin/channels/nope/test").status_code == 404


def test_reload_without_config_file_is_refused(admin: httpx.Client) -> None:
    response = admin.post("/admin/reload")
    assert response.status_code == 400


def test_reload_applies_a_changed_file(
    loop_thread: LoopThread, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:

    path = tmp_path / "live.yaml"
    config = {
        "database_url": f"sqlite:///{tmp_path / 'live.db'}",
        "admin_key": ADMIN_KEY,
        "pricing": {"overrides": {"test-*": {"input": 1.0}}},
        "channels": [
            {
                "name": "a",
                "type": "openai-compatible",
                "base_url": fake_openai.base_url,
                "models": ["test-one"],
            }
        ],  # fmt: skip
    }
    path.write_text(yaml.safe_dump(config))
    gateway = start_gateway(loop_thread, load_settings(path))
    try:
        key = gateway.create_key()
        auth = {"Authorization": f"Bearer {key}"}
        two = {**CHAT, "model": "test-two"}
        assert (
            httpx.post(f"{gateway.base_url}/chat/completions", json=two, headers=auth).status_code
            == 404
        )
        config["channels"][0]["models"] = ["test-one", "test-two"]  # type: ignore[index]
        path.write_text(yaml.safe_dump(config))
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert httpx.post(f"{gateway.url}/admin/reload", headers=admin).status_code == 200
        assert (
            httpx.post(f"{gateway.base_url}/chat/completions", json=two, headers=auth).status_code
            == 200
        )
        path.write_text("channels: [{name: broken, type: nope}]")
        refused = httpx.post(f"{gateway.url}/admin/reload", headers=admin)
        assert refused.status_code == 400 and "unchanged" in refused.json()["error"]["message"]
        assert (
            httpx.post(f"{gateway.base_url}/chat/completions", json=two, headers=auth).status_code
            == 200
        )
    finally:
        gateway.stop()


def test_usage_report_counts_metered_units(gateway: Gateway, admin: httpx.Client) -> None:
    key = gateway.create_key("units")
    key_id = gateway.key_record(key).id
    now = time.time()
    rows = [
        UsageRow(
            request_id=f"req-{model}", key_id=key_id, endpoint="x", model=model,
            upstream_model=model, channel="fake", prompt_tokens=0, cached_tokens=0,
            completion_tokens=0, cost_micro=cost, status=200, error_code=None, latency_ms=1.0,
            ttft_ms=None, stream=False, created_at=now, **units,
        )
        for model, cost, units in (
            ("dall-e-3", 240_000, {"images": 3}),
            ("whisper-1", 6_000, {"audio_seconds": 60}),
            ("rerank-v3.5", 14_000, {"search_units": 7, "calls": 1}),
        )
    ]  # fmt: skip
    for row in rows:
        gateway.state.usage_sink.record(row)
    gateway.flush()
    by_model = admin.get("/admin/usage", params={"group_by": "model"}).json()["data"]
    units = ("images", "audio_seconds", "characters", "search_units", "calls")
    assert {r["model"]: [r[u] for u in units] for r in by_model} == {
        "dall-e-3": [3, 0, 0, 0, 0],
        "whisper-1": [0, 60, 0, 0, 0],
        "rerank-v3.5": [0, 0, 0, 7, 1],
    }
    billing = httpx.get(
        f"{gateway.url}/dashboard/billing/usage", headers={"Authorization": f"Bearer {key}"}
    )
    assert billing.status_code == 200
    assert billing.json()["total_usage"] == pytest.approx(26.0)  # cents: $0.26
