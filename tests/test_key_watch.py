"""Key changes made outside a server (the CLI, another worker) reach it through the database's
key change log within ``limits.key_change_poll_s``, without Redis and whatever the key cache TTL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from sqlalchemy import delete

from sluice.key_watch import KeyChangeWatcher
from sluice.storage.db import create_engine
from sluice.storage.key_changes import KeyChangeRow
from sluice.storage.key_store import KeyChanges, KeyStore
from sluice.storage.migrate import upgrade_database
from sluice.storage.schema import key_changes
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import ADMIN_KEY, Gateway, free_port, wait_until_ready

SLUICE = str(Path(sys.executable).parent / "sluice")
CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


# --- the watcher against a database, no server ------------------------------------------------


async def test_watcher_reports_each_change_once_and_a_gap_as_everything(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    seen: list[KeyChangeRow | None] = []

    async def on_change(change: KeyChangeRow | None) -> None:
        seen.append(change)

    try:
        await upgrade_database(engine)
        store = KeyStore(engine)
        key = (await store.create("k")).record
        await store.update(key.id, KeyChanges(rpm=1))  # before the watcher: already applied
        watcher = KeyChangeWatcher(engine, on_change, interval_s=3600)  # polled by hand
        await watcher.start()
        assert await watcher.poll() == 0 and seen == []
        await store.update(key.id, KeyChanges(disabled=True))
        await store.update(key.id, KeyChanges(reset_spent=True))
        assert await watcher.poll() == 2
        assert [(c.key_hash, c.spend_reset) for c in seen if c] == [
            (key.key_hash, False),
            (key.key_hash, True),
        ]
        assert await watcher.poll() == 0 and len(seen) == 2

        await store.update(key.id, KeyChanges(rpm=2))
        await store.update(key.id, KeyChanges(rpm=3))
        async with engine.begin() as conn:  # the first row this worker has not seen is pruned
            await conn.execute(delete(key_changes).where(key_changes.c.version == 4))
        assert await watcher.poll() == 1 and seen[-1] is None
        await watcher.close()
    finally:
        await engine.dispose()


async def test_close_waits_for_a_poll_in_flight_instead_of_cancelling_it(tmp_path: Path) -> None:
    # A poll cancelled inside the pool could leave its connection checked out while the engine
    # is disposed; the driver's connection was then dropped unclosed (a ResourceWarning that
    # failed an unrelated test when the garbage collector got to it).
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    entered, release = asyncio.Event(), asyncio.Event()
    finished: list[KeyChangeRow | None] = []

    async def slow_on_change(change: KeyChangeRow | None) -> None:
        entered.set()
        await release.wait()
        finished.append(change)

    try:
        await upgrade_database(engine)
        store = KeyStore(engine)
        key = (await store.create("k")).record
        watcher = KeyChangeWatcher(engine, slow_on_change, interval_s=0.01)
        await watcher.start()
        await store.update(key.id, KeyChanges(rpm=1))
        await asyncio.wait_for(entered.wait(), 5)  # a poll is in flight
        closing = asyncio.create_task(watcher.close())
        await asyncio.sleep(0.05)
        assert not closing.done(), "close() returned while a poll was still running"
        release.set()
        await asyncio.wait_for(closing, 5)
        assert [c.key_hash for c in finished if c] == [key.key_hash]
    finally:
        await engine.dispose()


# --- the CLI as a process, the gateway on the same SQLite database -----------------------------


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'sluice.db'}"}))
    result = subprocess.run(
        [SLUICE, *args, "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result


def _chat(gateway: Gateway, key: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.base_url}/chat/completions", json=CHAT, headers=headers)


def _refused_within(gateway: Gateway, key: str, seconds: float) -> float | None:
    """Seconds until the key is refused as disabled, or None if it is still served."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        response = _chat(gateway, key)
        if response.status_code == 401:
            assert response.json()["error"]["code"] == "key_disabled"
            return time.monotonic() - start
        assert response.status_code == 200, response.text
        time.sleep(0.05)
    return None


def _gateway(factory: GatewayFactory, fake: FakeOpenAI, poll_s: float) -> Gateway:
    limits = {"key_cache_ttl_s": 300, "key_change_poll_s": poll_s}
    return factory([openai_channel(fake)], limits=limits)


def test_a_cli_disable_reaches_a_running_server_at_once(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, poll_s=0.5)
    key = gateway.create_key("k")
    assert _chat(gateway, key).status_code == 200  # cached now, for 300 s
    _cli(tmp_path, "keys", "disable", "k")
    took = _refused_within(gateway, key, 1.5)
    assert took is not None, "a CLI change must reach the server within ~1.5 s"
    _cli(tmp_path, "keys", "enable", "k")
    deadline = time.monotonic() + 1.5
    while _chat(gateway, key).status_code != 200:
        assert time.monotonic() < deadline, "re-enabled through the CLI, still refused"
        time.sleep(0.05)


def test_without_the_poll_the_cache_ttl_still_rules(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # The control: with key_change_poll_s 0 the cached key outlives the CLI change.
    gateway = _gateway(gateway_factory, fake_openai, poll_s=0)
    key = gateway.create_key("k")
    assert _chat(gateway, key).status_code == 200
    _cli(tmp_path, "keys", "disable", "k")
    assert _refused_within(gateway, key, 1.5) is None


def test_a_cli_spend_reset_reaches_the_servers_budget(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, poll_s=0.5)
    key = gateway.create_key("k", budget_micro=100)  # a few requests of ~23 micro-dollars
    for _ in range(10):
        refused = _chat(gateway, key)
        if refused.status_code != 200:
            break
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    gateway.flush()
    _cli(tmp_path, "keys", "update", "k", "--reset-spent")
    deadline = time.monotonic() + 1.5
    while (response := _chat(gateway, key)).status_code != 200:
        assert response.status_code == 429 and time.monotonic() < deadline, response.text
        time.sleep(0.05)


def test_a_cli_delete_reaches_a_running_server(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, fake_openai, poll_s=0.5)
    key = gateway.create_key("k")
    assert _chat(gateway, key).status_code == 200
    _cli(tmp_path, "keys", "delete", "k")
    deadline = time.monotonic() + 1.5
    while (response := _chat(gateway, key)).status_code != 401:
        assert response.status_code == 200 and time.monotonic() < deadline, response.text
        time.sleep(0.05)


# --- `sluice serve` as a process ---------------------------------------------------------------


def _refused_in_a_row(url: str, key: str, seconds: float) -> bool:
    """Whether, within ``seconds``, 10 requests in a row are refused."""
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + seconds
    streak = 0
    while time.monotonic() < deadline and streak < 10:
        status = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers).status_code
        streak = streak + 1 if status == 401 else 0
    return streak >= 10


def test_a_cli_disable_reaches_a_served_process(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'sluice.db'}",
                "admin_key": ADMIN_KEY,
                "limits": {"key_cache_ttl_s": 300},  # key_change_poll_s: the default
                "channels": [openai_channel(fake_openai)],
                "pricing": {"overrides": {"test-*": {"input": 1.0, "output": 2.0}}},
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [SLUICE, "serve", "--port", str(port), "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, 60)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        key = httpx.post(f"{url}/admin/keys", json={"name": "k"}, headers=admin).json()["key"]
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth).status_code == 200
        result = subprocess.run(
            [SLUICE, "keys", "disable", "k", "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert _refused_in_a_row(url, key, 1.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
