"""Admin key: a configured key is at least 32 characters; a generated one lives in a 0600 file
whose path, never the key, is printed, and a second start neither regenerates nor prints it."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from sluice.admin.key_file import KEY_FILE_NAME, LEGACY_HASH_FILE_NAME, resolve_admin_key
from sluice.cli import main as cli_main
from sluice.serve import serve
from sluice.settings import ConfigError, parse_settings
from tests.support import free_port

SLUICE = str(Path(sys.executable).parent / "sluice")


@pytest.mark.parametrize("key", ["", "short", "sk-admin-" + "x" * 22], ids=["empty", "5", "31"])
def test_short_configured_admin_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match="admin_key: must be at least 32 characters"):
        parse_settings({"admin_key": key})


def test_admin_key_of_32_characters_is_accepted() -> None:
    assert parse_settings({"admin_key": "k" * 32}).admin_key is not None


def test_config_check_and_serve_refuse_a_short_admin_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text(yaml.safe_dump({"admin_key": "sk-admin-too-short"}))
    assert cli_main(["config", "check", str(config)]) == 2
    assert "admin_key: must be at least 32 characters, got 18" in capsys.readouterr().err
    assert serve(config, "127.0.0.1", free_port(), 1) == 2
    err = capsys.readouterr().err
    assert "admin_key: must be at least 32 characters" in err and "too-short" not in err


def _start(config: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [SLUICE, "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    output = _stop(process)
    pytest.fail(f"sluice serve did not become ready:\n{output}")


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


def _admin_status(url: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{url}/admin/keys", headers=headers, timeout=10).status_code


def test_generated_admin_key_is_written_to_a_0600_file_and_never_printed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "sluice.yaml"
    config.write_text(yaml.safe_dump({"database_url": f"sqlite:///{data / 'sluice.db'}"}))
    key_file = data / KEY_FILE_NAME

    process, url = _start(config)
    try:
        assert key_file.is_file()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert len(key) >= 32
        assert _admin_status(url, key) == 200
        assert _admin_status(url, key + "x") == 401
    finally:
        first = _stop(process)
    assert key not in first and str(key_file) in first
    written = key_file.stat().st_mtime_ns

    process, url = _start(config)
    try:
        assert _admin_status(url, key) == 200
    finally:
        second = _stop(process)
    assert key not in second and str(key_file) in second
    assert key_file.read_text().strip() == key and key_file.stat().st_mtime_ns == written
    assert not (data / LEGACY_HASH_FILE_NAME).exists()


def test_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    settings = parse_settings({"database_url": f"sqlite:///{tmp_path / 'sluice.db'}"})
    previous = os.umask(0)
    try:
        admin = resolve_admin_key(settings, tmp_path)
    finally:
        os.umask(previous)
    key_file = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert admin.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert admin.note is not None and key not in admin.note
    again = resolve_admin_key(settings, tmp_path)
    assert again.key_hash == admin.key_hash and key_file.read_text().strip() == key


def test_a_legacy_hash_file_keeps_working(tmp_path: Path) -> None:
    """Installations that were printed a key once and kept only its hash keep that key."""
    settings = parse_settings({"database_url": f"sqlite:///{tmp_path / 'sluice.db'}"})
    old_hash = hashlib.sha256(b"sk-admin-printed-long-ago").hexdigest()
    (tmp_path / LEGACY_HASH_FILE_NAME).write_text(old_hash + "\n")
    admin = resolve_admin_key(settings, tmp_path)
    assert admin.key_hash == old_hash and not (tmp_path / KEY_FILE_NAME).exists()


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    settings = parse_settings({"database_url": f"sqlite:///{tmp_path / 'sluice.db'}"})
    (tmp_path / KEY_FILE_NAME).write_text("short\n")
    with pytest.raises(ConfigError, match="at least 32 characters"):
        resolve_admin_key(settings, tmp_path)


def test_a_configured_key_writes_no_file(tmp_path: Path) -> None:
    settings = parse_settings({"admin_key": "k" * 40})
    admin = resolve_admin_key(settings, tmp_path)
    assert admin.key_hash == hashlib.sha256(b"k" * 40).hexdigest() and admin.note is None
    assert list(tmp_path.iterdir()) == []
