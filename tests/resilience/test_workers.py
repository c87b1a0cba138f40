"""``sluice serve --workers 2``: connections spread over the workers; a dead worker is replaced.

Each worker owns a SO_REUSEPORT socket, so a burst of keep-alive connections (what a load
balancer or a connection pool opens) is shared by the kernel instead of being accepted by
whichever worker woke first. Responses tell the workers apart by their request-id prefix,
which is random per process.
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import signal
import time
from pathlib import Path

import psutil

from tests.conftest import require_service
from tests.resilience.processes import ServerProcess, server_config
from tests.resilience.test_shutdown import Make
from tests.support import free_port

_CONNECTIONS = 64


async def _worker_of_one_connection(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: sluice\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "x-request-id":
            return value.strip()[:20]  # "req_" + the process's 16 hex digits
    raise AssertionError(f"no x-request-id in {head!r}")


async def _spread(port: int) -> collections.Counter[str]:
    # All connections are opened at once and held until every one has its answer.
    return collections.Counter(
        await asyncio.gather(*(_worker_of_one_connection(port) for _ in range(_CONNECTIONS)))
    )


def _start(tmp_path: Path, faulty: Make, servers: list[ServerProcess]) -> ServerProcess:
    require_service("Redis", "127.0.0.1", 6379)  # several workers need shared limits
    redis_url = f"redis://127.0.0.1:6379/{1 + secrets.randbelow(15)}"
    config = server_config(tmp_path, faulty("up"), redis_url=redis_url)
    server = ServerProcess(config, free_port(), tmp_path / "server.log", workers=2)
    servers.append(server)
    server.wait_ready()
    return server


def _workers(server: ServerProcess) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(server.proc.pid).children():
        try:
            command = " ".join(child.cmdline())
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue  # a worker that died and is not reaped yet
        if "spawn_main" in command:
            found.append(child)
    return found


def test_a_burst_of_connections_is_shared_by_both_workers(
    tmp_path: Path, faulty: Make, servers: list[ServerProcess]
) -> None:
    server = _start(tmp_path, faulty, servers)
    spread = asyncio.run(_spread(server.port))
    assert len(spread) == 2, spread
    # The kernel hashes connections: each worker gets about half; 20% is 6 sigma away.
    assert min(spread.values()) >= _CONNECTIONS // 5, spread


def test_a_killed_worker_is_replaced_and_sigterm_exits_cleanly(
    tmp_path: Path, faulty: Make, servers: list[ServerProcess]
) -> None:
    server = _start(tmp_path, faulty, servers)
    before = _workers(server)
    assert len(before) == 2
    os.kill(before[0].pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = _workers(server)
        if len(now) == 2 and before[0].pid not in {p.pid for p in now}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the killed worker was not replaced")
    server.wait_ready()
    deadline = time.monotonic() + 30
    while len(asyncio.run(_spread(server.port))) < 2:  # the new worker takes connections
        assert time.monotonic() < deadline, "the new worker never answered"
        time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in now)
