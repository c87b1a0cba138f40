"""``sluice serve --workers N``: N uvicorn processes, each with its own listening socket.

Why not uvicorn's own ``--workers``: there every worker accepts from one shared socket, and
the first worker to wake accepts every pending connection in a loop. Clients that open their
connections in a burst and keep them alive (load balancers, connection pools, benchmarks) end
up mostly on one worker while the others idle, and throughput varies from run to run
(docs/architecture.md has the measurement). With SO_REUSEPORT the
kernel spreads connections across the workers' sockets by a hash of the connection.

The supervisor restarts a worker that dies, forwards SIGHUP (config reload) to every worker,
and on SIGTERM/SIGINT lets each worker drain (uvicorn's graceful shutdown, which flushes the
usage rows) before it exits with 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

__all__ = ["WorkerPool", "reuse_port_socket", "reuse_port_supported"]

log = logging.getLogger("sluice.workers")

_BACKLOG = 2048
_FAST_FAILURES_BEFORE_GIVING_UP = 3
_FAST_FAILURE_S = 10.0  # a worker that dies sooner than this after its start failed to start


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that other sockets of this user may share (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _worker_main(config_kwargs: dict[str, Any]) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter)."""
    config = uvicorn.Config(**config_kwargs)
    sock = reuse_port_socket(config.host, config.port)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    # uvicorn returns after a graceful drain; a failed startup is an error for the supervisor.
    raise SystemExit(0 if server.started else 3)


@dataclass
class _Worker:
    process: BaseProcess
    started_at: float = field(default_factory=time.monotonic)


class WorkerPool:
    def __init__(self, config_kwargs: dict[str, Any], workers: int, grace_s: float) -> None:
        self._config_kwargs = config_kwargs
        self._count = workers
        self._grace_s = grace_s
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._stop = threading.Event()
        self._fast_failures = 0

    def check_port(self) -> None:
        """Fail early, in the supervisor, when the address is taken by another program.

        The probe socket is bound but closed before any worker starts: a listening socket
        here would get its share of connections and never accept them.
        """
        probe = reuse_port_socket(self._config_kwargs["host"], self._config_kwargs["port"])
        probe.close()

    def _spawn(self) -> _Worker:
        process = self._context.Process(
            target=_worker_main, args=(self._config_kwargs,), name="sluice-worker"
        )
        process.start()
        return _Worker(process)

    def _signal_all(self, signum: int) -> None:
        for worker in self._workers:
            if worker.process.is_alive() and worker.process.pid is not None:
                try:
                    os.kill(worker.process.pid, signum)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, lambda *_: self._stop.set())
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGHUP] = signal.signal(
            signal.SIGHUP, lambda *_: self._signal_all(signal.SIGHUP)
        )
        try:
            self._workers = [self._spawn() for _ in range(self._count)]
            failed = self._supervise()
        finally:
            self._shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 3 if failed else 0

    def _supervise(self) -> bool:
        """Keep N workers alive until asked to stop; True if workers keep failing to start."""
        while not self._stop.wait(0.5):
            for index, worker in enumerate(self._workers):
                if worker.process.is_alive():
                    continue
                lived = time.monotonic() - worker.started_at
                code = worker.process.exitcode
                if lived < _FAST_FAILURE_S:
                    self._fast_failures += 1
                else:
                    self._fast_failures = 0
                if self._fast_failures >= _FAST_FAILURES_BEFORE_GIVING_UP:
                    log.error(
                        "workers keep exiting during start-up (last code %s); giving up", code
                    )
                    return True
                log.error(
                    "worker %s exited with code %s; starting a new one", worker.process.pid, code
                )
                self._workers[index] = self._spawn()
        return False

    def _shutdown(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s + 5.0
        for worker in self._workers:
            worker.process.join(max(deadline - time.monotonic(), 0.1))
        for worker in self._workers:
            if worker.process.is_alive():
                log.error("worker %s did not stop in time; killing it", worker.process.pid)
                worker.process.kill()
                worker.process.join(5.0)
