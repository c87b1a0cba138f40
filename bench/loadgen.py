"""Load generators: wrk (non-streaming throughput) and an aiohttp client (streaming).

Both return plain dicts (JSON-ready) so results can be written as they are.
Latencies are in milliseconds, rates per second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a Sluice dependency
    _loads = json.loads

WRK_MARK = "WRK_JSON "
PROMPT = "Summarise the benefits of load testing an API gateway in one sentence."


def chat_body(model: str, tokens: int, stream: bool) -> dict[str, Any]:
    """The request every target gets; ``max_tokens`` sets the fake upstream's chunk count."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def speech_body(model: str) -> dict[str, Any]:
    """A text-to-speech request: the fake upstream answers a WAV of fixed length."""
    return {"model": model, "input": PROMPT, "voice": "alloy", "response_format": "wav"}


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds from seconds."""
    ordered = sorted(v * 1000.0 for v in values_s)
    if not ordered:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
    return {
        "p50": round(percentile(ordered, 50), 3),
        "p90": round(percentile(ordered, 90), 3),
        "p99": round(percentile(ordered, 99), 3),
        "mean": round(sum(ordered) / len(ordered), 3),
        "max": round(ordered[-1], 3),
    }


# --------------------------------------------------------------------------- wrk


def _lua_long_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def wrk_script(body: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    """A wrk Lua script that POSTs ``body`` and prints a JSON summary line at the end."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {_lua_long_string(json.dumps(body, separators=(',', ':')))}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [
        f"wrk.headers[ {_lua_long_string(k)} ] = {_lua_long_string(v)}" for k, v in headers.items()
    ]
    pct = ", ".join(f'"p{name}":%.1f' for name in ("50", "75", "90", "99", "999"))
    lines.append(
        f"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{WRK_MARK}{{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,'
    .. '"timeouts":%d,"mean_us":%.1f,"stdev_us":%.1f,"min_us":%.1f,"max_us":%.1f,{pct}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""
    )
    return "\n".join(lines) + "\n"


def find_wrk() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkRun:
    url: str
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    concurrency: int
    duration_s: float
    threads: int = 1
    timeout_s: float = 10.0
    wrk: str = "wrk"
    command: list[str] = field(default_factory=list)

    def argv(self, script: Path) -> list[str]:
        return [
            self.wrk,
            f"-t{min(self.threads, self.concurrency)}",
            f"-c{self.concurrency}",
            f"-d{max(1, round(self.duration_s))}s",
            f"--timeout={max(1, round(self.timeout_s))}s",
            "-s",
            str(script),
            self.url,
        ]


def run_wrk(run: WrkRun) -> dict[str, Any]:
    """Run wrk once; parse the Lua ``done`` summary into a result dict (ms, req/s)."""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(wrk_script(run.body, run.headers))
        argv = run.argv(script)
        run.command = argv
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=run.duration_s + run.timeout_s + 30,
            check=False,
        )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(WRK_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed (rc={proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}"
        )
    raw = json.loads(line[len(WRK_MARK) :])
    duration = raw["duration_us"] / 1e6
    errors = sum(
        raw[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    ok = max(0, raw["requests"] - raw["status_errors"])
    return {
        "tool": "wrk",
        "mode": "json",
        "concurrency": run.concurrency,
        "duration_s": round(duration, 3),
        "requests": raw["requests"],
        "ok": ok,
        "errors": errors,
        "error_detail": {k: raw[k] for k in raw if k.endswith("_errors") or k == "timeouts"},
        "rps": round(ok / duration, 1) if duration > 0 else 0.0,
        "latency_ms": {
            "p50": raw["p50"] / 1000.0,
            "p75": raw["p75"] / 1000.0,
            "p90": raw["p90"] / 1000.0,
            "p99": raw["p99"] / 1000.0,
            "p999": raw["p999"] / 1000.0,
            "mean": round(raw["mean_us"] / 1000.0, 3),
            "max": raw["max_us"] / 1000.0,
        },
        "command": " ".join(argv[:-3] + ["-s", "post.lua", run.url]),
    }


# --------------------------------------------------------------------------- asyncio client


@dataclass
class ClientRun:
    url: str
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    concurrency: int
    duration_s: float
    max_requests: int = 1_000_000
    request_timeout_s: float = 30.0
    expected_chunks: int | None = None
    # A binary answer (speech audio): time to its first body byte, and its length.
    binary: bool = False
    expected_bytes: int | None = None


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    stream_rates: list[float] = field(default_factory=list)
    chunk_counts: list[int] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    byte_counts: list[int] = field(default_factory=list)
    usage_seen: int = 0
    done_seen: int = 0
    incomplete: int = 0
    ok_chunks: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    issued: int = 0

    def error(self, message: str) -> None:
        self.errors += 1
        self.incomplete += message.startswith("incomplete stream")
        if len(self.error_samples) < 5 and message not in self.error_samples:
            self.error_samples.append(message[:300])


def _sse_lines(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    lines = (pending + data).split(b"\n")
    return lines[:-1], lines[-1]


async def _one_stream(session: Any, run: ClientRun, body: bytes, tally: _Tally) -> None:
    t0 = time.perf_counter()
    first: float | None = None
    chunks = 0
    done = usage = False
    async with session.post(run.url, data=body, headers=run.headers) as resp:
        if resp.status != 200:
            tally.error(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            return
        pending = b""
        async for data in resp.content.iter_any():
            lines, pending = _sse_lines(pending, data)
            for raw in lines:
                line = raw.rstrip(b"\r")
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if first is None:
                    first = time.perf_counter()
                if payload == b"[DONE]":
                    done = True
                    continue
                obj = _loads(payload)
                choices = obj.get("choices")
                if choices and (choices[0].get("delta") or {}).get("content"):
                    chunks += 1
                if obj.get("usage"):
                    usage = True
    end = time.perf_counter()
    if first is None:
        tally.error("stream ended without any data event")
        return
    tally.chunk_counts.append(chunks)
    expected = run.expected_chunks
    if not done or (expected is not None and chunks != expected):
        # A stream cut short is a failed request: it must not count as throughput.
        tally.error(f"incomplete stream: {chunks} content chunks (want {expected}), [DONE]={done}")
        return
    tally.latencies.append(end - t0)
    tally.ttfts.append(first - t0)
    tally.ok_chunks += chunks
    if end > first:
        tally.stream_rates.append(chunks / (end - first))
    tally.usage_seen += usage
    tally.done_seen += done


async def _one_json(session: Any, run: ClientRun, body: bytes, tally: _Tally) -> None:
    t0 = time.perf_counter()
    async with session.post(run.url, data=body, headers=run.headers) as resp:
        data = await resp.read()
        if resp.status != 200:
            tally.error(f"HTTP {resp.status}: {data[:200]!r}")
            return
    end = time.perf_counter()
    obj = _loads(data)
    if not obj.get("choices"):
        tally.error(f"no choices in response: {data[:200]!r}")
        return
    tally.latencies.append(end - t0)
    tally.usage_seen += bool(obj.get("usage"))


async def _one_binary(session: Any, run: ClientRun, body: bytes, tally: _Tally) -> None:
    t0 = time.perf_counter()
    first: float | None = None
    size = 0
    async with session.post(run.url, data=body, headers=run.headers) as resp:
        if resp.status != 200:
            tally.error(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            return
        async for data in resp.content.iter_any():
            if first is None and data:
                first = time.perf_counter()
            size += len(data)
    end = time.perf_counter()
    if first is None or (run.expected_bytes is not None and size != run.expected_bytes):
        tally.error(f"incomplete binary answer: {size} bytes (want {run.expected_bytes})")
        return
    tally.latencies.append(end - t0)
    tally.ttfbs.append(first - t0)
    tally.byte_counts.append(size)


async def run_client_async(run: ClientRun) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` workers, each sending back-to-back requests."""
    import aiohttp

    stream = bool(run.body.get("stream"))
    body = json.dumps(run.body).encode()
    headers = {"Content-Type": "application/json", **run.headers}
    run = dataclasses.replace(run, headers=headers)
    tally = _Tally()
    one = _one_binary if run.binary else _one_stream if stream else _one_json
    connector = aiohttp.TCPConnector(limit=run.concurrency, limit_per_host=run.concurrency)
    timeout = aiohttp.ClientTimeout(total=run.request_timeout_s)
    start = time.perf_counter()
    deadline = start + run.duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline and tally.issued < run.max_requests:
            tally.issued += 1
            try:
                await one(session, run, body, tally)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                tally.error(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(run.concurrency)))
    elapsed = time.perf_counter() - start
    ok = len(tally.latencies)
    total_chunks = tally.ok_chunks  # chunks of complete streams only
    result: dict[str, Any] = {
        "tool": "aiohttp-client",
        "mode": "binary" if run.binary else "stream" if stream else "json",
        "concurrency": run.concurrency,
        "duration_s": round(elapsed, 3),
        "requests": ok + tally.errors,
        "ok": ok,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "rps": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": summarize_ms(tally.latencies),
        "usage_seen": tally.usage_seen,
    }
    if run.binary:
        result.update(
            {
                "ttfb_ms": summarize_ms(tally.ttfbs),
                "bytes_expected": run.expected_bytes,
                "bytes_min": min(tally.byte_counts, default=0),
                "bytes_max": max(tally.byte_counts, default=0),
            }
        )
    elif stream:
        expected = run.expected_chunks
        counts = tally.chunk_counts
        result.update(
            {
                "ttft_ms": summarize_ms(tally.ttfts),
                "chunks_expected": expected,
                "chunks_min": min(counts, default=0),
                "chunks_max": max(counts, default=0),
                "chunk_mismatches": sum(
                    1 for c in counts if expected is not None and c != expected
                ),
                "incomplete_streams": tally.incomplete,
                "done_seen": tally.done_seen,
                "chunks_per_s": round(total_chunks / elapsed, 1) if elapsed > 0 else 0.0,
                "stream_chunks_per_s_p50": round(percentile(sorted(tally.stream_rates), 50), 1),
            }
        )
    return result


def run_client(run: ClientRun) -> dict[str, Any]:
    """Synchronous wrapper (uses uvloop when installed, like the servers under test)."""
    try:
        import uvloop

        return uvloop.run(run_client_async(run))
    except ImportError:
        return asyncio.run(run_client_async(run))
