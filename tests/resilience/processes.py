"""A real ``sluice serve`` process for lifecycle tests, and the config it starts from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.fakes.faulty_upstream import FaultyUpstream
from tests.resilience.conftest import channel
from tests.support import ADMIN_KEY, wait_until_ready

SLUICE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "sluice"


class ServerProcess:
    def __init__(self, config: Path, port: int, log: Path, workers: int = 1) -> None:
        self.port = port
        self._log = log.open("ab")
        command = [str(SLUICE), "serve", "--config", str(config), "--port", str(port)]
        self.proc = subprocess.Popen(
            [*command, "--workers", str(workers)],
            cwd=config.parent, stdout=self._log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")},
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until_ready(self.url, self.proc, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def server_config(tmp_path: Path, upstream: FaultyUpstream, **extra: Any) -> Path:
    raw: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'sluice.db'}",
        "admin_key": ADMIN_KEY,
        "log_level": "warning",
        "shutdown_grace_s": 10,
        "channels": [channel(upstream)],
        "pricing": {"overrides": {"test-*": {"input": 1.0, "output": 2.0}}},
        **extra,
    }
    path = tmp_path / "sluice.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
