"""Child processes the harness owns, HTTP readiness polling, and RSS sampling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class Unavailable(Exception):
    """A target could not be installed or started; the run goes on without it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def http_post_json(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float = 30.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **headers}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


class ManagedProcess:
    """A server started in its own session (process group), logged to a file."""

    registry: list[ManagedProcess] = []

    def __init__(
        self,
        name: str,
        argv: Sequence[object],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        ManagedProcess.registry.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def log_summary(self) -> dict[str, int]:
        """How noisy the server's log was: lines, tracebacks, lines mentioning errors."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return {}
        lines = text.splitlines()
        return {
            "lines": len(lines),
            "tracebacks": sum(1 for ln in lines if ln.startswith("Traceback")),
            "error_lines": sum(1 for ln in lines if "error" in ln.lower()),
        }

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left."""
        if self in ManagedProcess.registry:
            ManagedProcess.registry.remove(self)
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; make sure no group member (a worker) outlived it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            break
        self._log.close()

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(reversed(cls.registry)):
            proc.stop(timeout=5.0)


def wait_ready(
    proc: ManagedProcess,
    url: str,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> float:
    """Poll ``url`` until it answers 200; return seconds waited. Otherwise stop the process
    and raise Unavailable with the reason and its log tail."""
    start = time.monotonic()
    deadline = start + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            reason = (
                f"{proc.name} exited with code {proc.proc.returncode} before it was ready; "
                f"log tail:\n{proc.tail()}"
            )
            proc.stop()  # its process group may still hold children
            raise Unavailable(reason)
        try:
            status, body = http_get(url, headers, timeout=2.0)
            if status == 200:
                return time.monotonic() - start
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    reason = f"{proc.name} not ready after {timeout_s:.0f}s ({last}); log tail:\n{proc.tail()}"
    proc.stop()
    raise Unavailable(reason)


def run_logged(
    argv: Sequence[object],
    log_path: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a setup command to completion, appending its output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    with log_path.open("a") as log:
        log.write(
            f"$ {' '.join(map(str, argv))}\n{proc.stdout}{proc.stderr}\n[rc={proc.returncode}]\n"
        )
    return proc


# --------------------------------------------------------------------------- RSS


def _role(proc: Any, root_pid: int, has_children: bool) -> str:
    if proc.pid == root_pid:
        return "supervisor" if has_children else "main"
    try:
        cmd = " ".join(proc.cmdline())
    except Exception:  # psutil raises several kinds for vanished processes
        cmd = ""
    return "helper" if "resource_tracker" in cmd else "worker"


def process_tree(root_pid: int) -> list[dict[str, Any]]:
    """RSS of a server's process and its descendants, tagged with roles."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    has_children = len(members) > 1
    out = []
    for p in members:
        try:
            rss = p.memory_info().rss
            out.append(
                {
                    "pid": p.pid,
                    "role": _role(p, root_pid, has_children),
                    "name": p.name(),
                    "rss_mib": round(rss / MIB, 1),
                }
            )
        except psutil.NoSuchProcess:
            continue
    return out


@dataclass
class RssSampler:
    """Samples the RSS of a process tree every ``interval_s`` in a background thread."""

    root_pid: int
    interval_s: float = 1.0
    samples: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def __enter__(self) -> RssSampler:
        self._t0 = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._sample()

    def _sample(self) -> None:
        tree = process_tree(self.root_pid)
        if tree:
            self.samples.append((round(time.monotonic() - self._t0, 2), tree))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def summary(self) -> list[dict[str, Any]]:
        """Per process: role, first/last/max RSS (MiB) over all samples."""
        per: dict[int, dict[str, Any]] = {}
        for _, tree in self.samples:
            for p in tree:
                entry = per.setdefault(
                    p["pid"],
                    {
                        "pid": p["pid"],
                        "role": p["role"],
                        "name": p["name"],
                        "first_mib": p["rss_mib"],
                    },
                )
                entry["last_mib"] = p["rss_mib"]
                entry["max_mib"] = max(entry.get("max_mib", 0.0), p["rss_mib"])
        return list(per.values())

    def series(self) -> list[dict[str, Any]]:
        """Time series for plotting: [{t, pid: rss, ...}] over worker-like processes."""
        return [
            {
                "t": t,
                "rss_mib": {str(p["pid"]): p["rss_mib"] for p in tree if p["role"] != "helper"},
            }
            for t, tree in self.samples
        ]


def worker_rss(summary: Sequence[Mapping[str, Any]]) -> list[float]:
    """Max RSS of each serving process (workers, or the single main process)."""
    return [float(p["max_mib"]) for p in summary if p["role"] in ("worker", "main")]


# --------------------------------------------------------------------------- foreign load


def _busy_and_own(services: frozenset[str]) -> tuple[float, float]:
    """CPU seconds: busy on the whole machine, and used by the benchmark itself.

    The benchmark is this process, its descendants, and the processes named in ``services``
    (the database / Redis servers the target under test uses).  Children that already exited
    count through their parent's ``children_*`` times.
    """
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
    busy = sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    me = psutil.Process()
    mine = [me, *me.children(recursive=True)]
    if services:
        mine += [p for p in psutil.process_iter(["name"]) if p.info["name"] in services]
    own = 0.0
    for p in mine:
        try:
            c = p.cpu_times()
            own += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            continue
    return busy, own


@dataclass
class CpuMeter:
    """Measures how many cores processes outside the benchmark used during a window."""

    services: frozenset[str] = frozenset()
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __enter__(self) -> CpuMeter:
        self._start = (time.monotonic(), *_busy_and_own(self.services))
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def foreign_cores(self) -> float:
        t0, busy0, own0 = self._start
        busy1, own1 = _busy_and_own(self.services)
        elapsed = time.monotonic() - t0
        if elapsed <= 0:
            return 0.0
        return max(0.0, round(((busy1 - busy0) - (own1 - own0)) / elapsed, 2))


def wait_quiet(
    max_wait_s: float,
    threshold_cores: float = 0.25,
    window_s: float = 2.0,
    services: frozenset[str] = frozenset(),
) -> float:
    """Wait (bounded) until other processes use < ``threshold_cores``; return the last load."""
    deadline = time.monotonic() + max_wait_s
    while True:
        with CpuMeter(services) as meter:
            time.sleep(window_s)
        load = meter.foreign_cores()
        if load < threshold_cores or time.monotonic() + window_s > deadline:
            return load
