"""Start real ``sluice serve`` processes (one worker each) sharing PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import ADMIN_KEY, free_port, wait_until_ready

SLUICE = str(Path(sys.executable).with_name("sluice"))


def replica_config(
    path: Path, database_url: str, redis_url: str, upstream_base_url: str, **extra: Any
) -> Path:
    raw: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "admin_key": ADMIN_KEY,
        "log_level": "warning",
        # A long cache TTL: a change seen within 1 s can only have come through invalidation.
        "limits": {"key_cache_ttl_s": 60},
        "pricing": {"overrides": {"test-*": {"input": 1.0, "output": 2.0}}},
        "channels": [
            {
                "name": "fake-openai",
                "type": "openai-compatible",
                "base_url": upstream_base_url,
                "api_key": "sk-upstream-123456",
                "models": ["test-*"],
            }
        ],
    }
    raw.update(extra)
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass
class Replica:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@dataclass
class ReplicaSet:
    replicas: list[Replica] = field(default_factory=list)

    def start(self, config: Path, count: int, workdir: Path) -> None:
        for index in range(count):
            port = free_port()
            log_path = workdir / f"replica{index}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [SLUICE, "serve", "--config", str(config), "--host", "127.0.0.1",
                     "--port", str(port), "--workers", "1"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=dict(os.environ),
                    start_new_session=True,
                )  # fmt: skip
            self.replicas.append(Replica(port, process, log_path))
        for replica in self.replicas:
            self._wait_ready(replica)

    @staticmethod
    def _wait_ready(replica: Replica, timeout_s: float = 60) -> None:
        wait_until_ready(
            replica.url, replica.process, timeout_s, lambda: f":\n{replica.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM (graceful: the usage sink flushes), then SIGKILL after a bound."""
        for replica in self.replicas:
            if replica.process.poll() is None:
                os.killpg(replica.process.pid, signal.SIGTERM)
        for replica in self.replicas:
            try:
                replica.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(replica.process.pid, signal.SIGKILL)
                replica.process.wait(10)
