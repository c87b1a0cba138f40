"""Servers Sluice runs as child processes on loopback: started, awaited until healthy, stopped.

Shared by the managed upstreams (``local_model``: llama.cpp; ``local_audio.child``: the audio
server), which differ only in their command line and the URL that answers 200 once ready.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

__all__ = ["free_port", "start_child", "stop_child"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_child(
    command: Sequence[str],
    ready_url: str,
    timeout_s: float,
    what: str,
    *,
    show_errors: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` and return once ``ready_url`` answers 200; ``what`` names the server in
    errors. A child that exits or is not ready in time is stopped and reported.

    ``show_errors``: the child's stderr goes to ours (a server that logs only its errors there);
    otherwise both its outputs are discarded (llama.cpp's are chatty)."""
    stderr = None if show_errors else subprocess.DEVNULL
    process = subprocess.Popen(
        list(command), stdout=subprocess.DEVNULL, stderr=stderr, env=dict(os.environ)
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1.0) as response:  # loopback only
                if response.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    stop_child(process)
    raise RuntimeError(f"{what} did not become ready in {timeout_s:.0f}s")


def stop_child(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ten seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
