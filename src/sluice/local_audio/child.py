"""The local audio server as ``sluice serve``'s child process (see ``server.py`` for why)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

from sluice.child_process import free_port, start_child, stop_child

__all__ = ["LocalAudioServer"]


@dataclass
class LocalAudioServer:
    """``python -m sluice.local_audio.server`` bound to loopback, stopped with the gateway (and
    stopping by itself if the gateway is killed without stopping it)."""

    port: int = 0
    threads: int = 1
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, ready_timeout_s: float = 120.0) -> str:
        """Start the server and return its base URL once its engines are loaded."""
        if self.port == 0:
            self.port = free_port()
        command = [
            sys.executable, "-m", "sluice.local_audio.server",
            "--port", str(self.port),
            "--threads", str(self.threads),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        self.process = start_child(
            command,
            f"http://127.0.0.1:{self.port}/health",
            ready_timeout_s,
            "local audio server",
            show_errors=True,
        )
        return self.base_url

    def stop(self) -> None:
        stop_child(self.process)
