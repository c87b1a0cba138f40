"""The built wheel is complete: installed into a fresh venv (no repository on the path), it
serves a request.

Operators who `pip install sluice` never see the repository, so every data file the gateway
reads at run time (prices, the tokenizer's rank file, migrations) must be inside the wheel.
The fresh venv gets Sluice only from the wheel; its dependencies come from the test venv's
site-packages through a `.pth` line (nothing is downloaded: no network beyond loopback).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import ADMIN_KEY, free_port, wait_until_ready

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA_FILES = (
    "sluice/metering/data/prices.yaml",
    "sluice/metering/data/cl100k_base.tiktoken.gz",
    "sluice/storage/migrations/env.py",
    "sluice/storage/migrations/versions/0001_initial.py",
    "sluice/py.typed",
    "sluice/storage/migrations/versions/0006_runtime_channels.py",
    "sluice/console/templates/base.html",
    "sluice/console/static/console.css",
    "sluice/console/static/console.js",
)


def _build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("sluice-*.whl")
    return wheel


def _fresh_venv(root: Path, wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies only: a plain path line does not run the test venv's own .pth files, so its
    # editable install of Sluice (a .pth pointing at src/) stays out of the fresh venv.
    (Path(purelib) / "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=120,
    )
    return root


def test_wheel_carries_every_data_file(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in DATA_FILES if name not in names]
    assert not missing, f"wheel lacks {missing}"
    assert "sluice-0.1.0.dist-info/entry_points.txt" in names


def test_installed_wheel_serves_a_request(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    venv = _fresh_venv(tmp_path / "venv", wheel)
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sluice.cli; print(sluice.cli.__file__)"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert located.startswith(str(venv)), f"sluice imported from {located}, not the wheel"

    config = tmp_path / "sluice.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'wheel.db'}",
                "admin_key": ADMIN_KEY,
                "pricing": {"overrides": {"test-*": {"input": 1.0, "output": 2.0}}},
                "channels": [
                    {
                        "name": "fake",
                        "type": "openai-compatible",
                        "base_url": fake_openai.base_url,
                        "api_key": "sk-upstream-wheel-0000",
                        "models": ["test-*"],
                    }
                ],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SLUICE_CONFIG"] = str(config)
    sluice = str(venv / "bin" / "sluice")
    created = subprocess.run(
        [sluice, "keys", "create", "--name", "wheel", "--json"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    secret = yaml.safe_load(created.stdout)["key"]
    port = free_port()
    process = subprocess.Popen(
        [sluice, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process, 60)
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        # the console's templates and static files are read from the installed package
        page = httpx.get(f"{url}/console/sign-in", timeout=30)
        assert page.status_code == 200 and "<form" in page.text
        assert httpx.get(f"{url}/console/static/console.css", timeout=30).status_code == 200
        assert reply.json()["usage"]["total_tokens"] > 0
    finally:
        process.terminate()
        process.wait(timeout=30)
