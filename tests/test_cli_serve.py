"""The CLI and `sluice serve` as real processes sharing one database through SLUICE_CONFIG."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from sluice.providers.registry import supported_types
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import ADMIN_KEY, free_port

SLUICE = str(Path(sys.executable).parent / "sluice")


def _config(tmp_path: Path, fake: FakeOpenAI, model_map: dict[str, str] | None = None) -> Path:
    path = tmp_path / "sluice.yaml"
    config = {
        "database_url": f"sqlite:///{tmp_path / 'cli.db'}",
        "admin_key": "${TEST_ADMIN_KEY}",
        "limits": {"key_cache_ttl_s": 0.2},
        "pricing": {"overrides": {"test-*": {"input": 1.0, "output": 2.0}}},
        "channels": [
            {
                "name": "fake",
                "type": "openai-compatible",
                "base_url": fake.base_url,
                "api_key": "sk-upstream-secret-cli-0000",
                "models": ["test-*"],
                "model_map": model_map or {},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _env(config: Path) -> dict[str, str]:
    return {**os.environ, "SLUICE_CONFIG": str(config), "TEST_ADMIN_KEY": ADMIN_KEY}


def run_cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [SLUICE, *args], env=_env(config), capture_output=True, text=True, timeout=60
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def served(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[tuple[Path, str, Any]]:
    config = _config(tmp_path, fake_openai)
    port = free_port()
    process = subprocess.Popen(
        [SLUICE, "serve", "--port", str(port)],
        env=_env(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("sluice serve did not become ready")
        yield config, url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def test_config_check_reports_problems(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    good = _config(tmp_path, fake_openai)
    assert "OK" in run_cli(good, "config", "check", str(good)).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels:\n  - name: x\n    type: carrier-pigeon\n")
    result = run_cli(good, "config", "check", str(bad), check=False)
    assert result.returncode == 2 and "channels[0].type: Invalid enum value" in result.stderr
    # Every registered type, named from the registry (a new provider needs no edit here).
    expected = ", ".join(supported_types())
    assert f"(expected one of: {expected})" in result.stderr
    bad.write_text("channels:\n  - {name: x, type: openai}\n  - {name: x, type: openai}\n")
    result = run_cli(good, "config", "check", str(bad), check=False)
    assert result.returncode == 2 and "duplicate channel names: x" in result.stderr
    bad.write_text("channels:\n  - {name: y, type: openai}\n")
    result = run_cli(good, "config", "check", str(bad), check=False)
    assert result.returncode == 1 and "base_url is required" in result.stdout
    bad.write_text("admin_key: ${NOT_SET_ANYWHERE}\n")
    result = run_cli(good, "config", "check", str(bad), check=False)
    assert result.returncode == 2 and "NOT_SET_ANYWHERE" in result.stderr


def test_keys_cli_round_trip(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    config = _config(tmp_path, fake_openai)
    created = orjson.loads(
        run_cli(
            config, "keys", "create", "--name", "alice", "--budget-usd", "2.5", "--models",
            "test-*,gpt-4o", "--rpm", "60", "--tpm", "1000", "--expires", "2030-01-01",
            "--allow-ip", "127.0.0.1/32", "--json",
        ).stdout
    )  # fmt: skip
    assert created["key"].startswith("sk-") and len(created["key"]) == 51
    assert created["budget_usd"] == 2.5 and created["allowed_models"] == ["test-*", "gpt-4o"]
    listed = orjson.loads(run_cli(config, "keys", "list", "--json").stdout)
    assert [k["name"] for k in listed] == ["alice"] and "key" not in listed[0]
    assert created["key"] not in run_cli(config, "keys", "list").stdout
    updated = orjson.loads(run_cli(config, "keys", "update", "alice", "--rpm", "5").stdout)
    assert updated["rpm"] == 5
    assert orjson.loads(run_cli(config, "keys", "disable", "alice").stdout)["disabled"] is True
    assert orjson.loads(run_cli(config, "keys", "show", created["id"]).stdout)["disabled"]
    run_cli(config, "keys", "delete", "alice")
    assert orjson.loads(run_cli(config, "keys", "list", "--json").stdout) == []
    missing = run_cli(config, "keys", "show", "nobody", check=False)
    assert missing.returncode == 2 and "no key" in missing.stderr
    bad_ip = run_cli(config, "keys", "create", "--name", "b", "--allow-ip", "nope", check=False)
    assert bad_ip.returncode == 2


def test_serve_reload_and_cli_share_the_database(
    served: tuple[Path, str, Any], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    config, url, process = served
    key = orjson.loads(run_cli(config, "keys", "create", "--name", "k", "--json").stdout)["key"]
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": "test-a", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth).status_code == 200

    # SIGHUP reload: a new model alias appears without a restart.
    _config(tmp_path, fake_openai, model_map={"alias-1": "test-a"})
    process.send_signal(signal.SIGHUP)
    aliased = {**body, "model": "alias-1"}
    for _ in range(50):
        response = httpx.post(f"{url}/v1/chat/completions", json=aliased, headers=auth)
        if response.status_code == 200:
            break
        time.sleep(0.1)
    assert response.status_code == 200
    assert fake_openai.received[-1].body["model"] == "test-a"

    # POST /admin/reload: another alias.
    _config(tmp_path, fake_openai, model_map={"alias-2": "test-a"})
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    reloaded = httpx.post(f"{url}/admin/reload", headers=admin)
    assert reloaded.status_code == 200 and reloaded.json()["reloaded"] is True
    assert (
        httpx.post(
            f"{url}/v1/chat/completions", json={**body, "model": "alias-2"}, headers=auth
        ).status_code
        == 200
    )

    # Usage written by the server is visible to the CLI.
    time.sleep(0.3)
    rows = orjson.loads(run_cli(config, "usage", "--by", "model", "--json").stdout)
    assert {r["model"]: r["requests"] for r in rows} == {"alias-2": 1, "alias-1": 1, "test-a": 1}

    # A key disabled through the CLI stops working on the server within the cache TTL.
    run_cli(config, "keys", "disable", "k")
    time.sleep(0.4)
    refused = httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "key_disabled"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def _children(pid: int) -> list[int]:
    listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in listed]


def _running(pid: int) -> bool:
    """Not exited (a zombie waiting for a parent that does not reap it counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_serve_without_a_managed_channel_starts_no_child(served: tuple[Path, str, Any]) -> None:
    _, _, process = served
    assert _children(process.pid) == []


def _serve_local_audio(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    """``sluice serve`` with a local-audio channel on a known port: (serve, audio port, url)."""
    from sluice.local_audio.asr import transcription_available
    from sluice.local_audio.tts import speech_available
    from tests.conftest import skip_unless_ci

    if not (speech_available() or transcription_available()):
        skip_unless_ci("the local audio engines (the `local` extra) are not installed")
    audio_port = free_port()
    config = tmp_path / "sluice.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'audio.db'}",
                "admin_key": "${TEST_ADMIN_KEY}",
                "channels": [
                    {
                        "name": "voice",
                        "type": "local-audio",
                        "models": ["hibari"],
                        "port": audio_port,
                    }
                ],
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [SLUICE, "serve", "--port", str(port)],
        env=_env(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("sluice serve did not become ready")
    return process, audio_port, url


def _audio_health(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_serve_starts_the_local_audio_server_and_stops_it_with_the_gateway(
    tmp_path: Path,
) -> None:
    process, audio_port, _ = _serve_local_audio(tmp_path)
    try:
        (child,) = _children(process.pid)
        health = _audio_health(audio_port)
        assert health.status_code == 200 and "hibari" in health.json()["models"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        output = process.stdout.read().decode()
        assert "starting local audio server for channel voice" in output
        assert not _running(child)
        with pytest.raises(httpx.TransportError):
            _audio_health(audio_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def test_the_local_audio_server_stops_when_the_gateway_is_killed(tmp_path: Path) -> None:
    process, audio_port, _ = _serve_local_audio(tmp_path)
    (child,) = _children(process.pid)
    try:
        process.kill()  # no clean-up runs: the child notices its parent is gone
        process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(child)
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)
        assert process.stdout is not None
        process.stdout.close()
