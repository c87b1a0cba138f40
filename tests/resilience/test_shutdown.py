"""Process lifecycle with the real ``sluice serve`` binary: SIGTERM drains, SIGKILL recovers.

SIGTERM: the server stops accepting, lets in-flight requests and streams finish (up to
``shutdown_grace_s``), flushes usage rows and exits 0 — every 200 has exactly one usage row and
the key's ``spent_micro`` equals the sum of its rows. SIGKILL mid-load: the restarted server is
healthy; the completed requests whose rows were still queued are lost (measured and printed).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from sluice.settings import UsageConfig
from tests.conftest import require_service
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.resilience.conftest import MODEL
from tests.resilience.processes import ServerProcess, server_config
from tests.support import ADMIN_KEY, free_port

Make = Callable[[str], FaultyUpstream]


def _create_key(server: ServerProcess) -> tuple[str, str]:
    response = httpx.post(server.url + "/admin/keys", json={"name": "load", "budget_usd": 100},
                          headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    return body["key"], body["id"]


async def _request(client: httpx.AsyncClient, url: str, key: str, i: int) -> dict[str, Any]:
    stream = i % 2 == 0
    payload = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    try:
        response = await client.post(url + "/v1/chat/completions", json=payload,
                                     headers={"authorization": f"Bearer {key}"})  # fmt: skip
    except httpx.HTTPError as exc:
        return {"status": None, "error": type(exc).__name__}
    complete = not stream or response.text.rstrip().endswith("data: [DONE]")
    return {"status": response.status_code, "complete": complete,
            "request_id": response.headers.get("x-request-id")}  # fmt: skip


async def _load_then_signal(
    server: ServerProcess, key: str, count: int, sig: signal.Signals, after_s: float
) -> tuple[list[dict[str, Any]], float]:
    """Issue ``count`` requests over time, sending ``sig`` to the server ``after_s`` in."""
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        tasks = []
        started = time.monotonic()
        signalled_at = 0.0
        for i in range(count):
            tasks.append(asyncio.ensure_future(_request(client, server.url, key, i)))
            await asyncio.sleep(0.01)
            if not signalled_at and time.monotonic() - started >= after_s:
                server.proc.send_signal(sig)
                signalled_at = time.monotonic()
        return list(await asyncio.gather(*tasks)), signalled_at


def _rows(db: Path, key_id: str) -> tuple[list[tuple[str, int]], int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT request_id, cost_micro FROM usage WHERE key_id = ?", (key_id,)
        ).fetchall()
        spent = conn.execute("SELECT spent_micro FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return rows, int(spent[0])


async def test_sigterm_drains_in_flight_streams_and_flushes_usage(
    tmp_path: Path, faulty: Make, servers: list[ServerProcess]
) -> None:
    upstream = faulty("up").set("none", chunk_delay_s=0.15)  # a stream lasts about 1 s
    server = ServerProcess(server_config(tmp_path, upstream), free_port(), tmp_path / "server.log")
    servers.append(server)
    server.wait_ready()
    key, key_id = _create_key(server)
    results, signalled_at = await _load_then_signal(server, key, 80, signal.SIGTERM, 0.5)
    code = await asyncio.to_thread(server.proc.wait, 20)
    exited_after = time.monotonic() - signalled_at
    ok = [r for r in results if r["status"] == 200]
    refused = [r for r in results if r["status"] is None]
    rows, spent = _rows(tmp_path / "sluice.db", key_id)
    ids = [request_id for request_id, _ in rows]
    figures = {
        "requests": len(results),
        "ok_200": len(ok),
        "refused_after_sigterm": len(refused),
        "exit_code": code,
        "exit_after_s": round(exited_after, 2),
        "usage_rows": len(rows),
    }
    print("SIGTERM " + orjson.dumps(figures).decode())  # fmt: skip
    assert code == 0, (tmp_path / "server.log").read_text()[-3000:]
    assert ok and refused, "load spanned the signal"
    assert all(r["complete"] for r in ok), "every stream that got a 200 ran to [DONE]"
    assert all(ids.count(r["request_id"]) == 1 for r in ok), "exactly one row per 200"
    assert len(ids) == len(set(ids))
    assert spent == sum(cost for _, cost in rows) > 0
    assert not [r for r in results if r["status"] not in (None, 200)]


async def test_sigkill_mid_load_then_restart_is_healthy_and_loss_is_bounded(
    tmp_path: Path, faulty: Make, servers: list[ServerProcess]
) -> None:
    upstream = faulty("up").set("none")
    config = server_config(tmp_path, upstream)
    server = ServerProcess(config, free_port(), tmp_path / "server.log")
    servers.append(server)
    server.wait_ready()
    key, key_id = _create_key(server)
    results, _ = await _load_then_signal(server, key, 150, signal.SIGKILL, 0.8)
    await asyncio.to_thread(server.proc.wait, 10)
    restarted = ServerProcess(config, free_port(), tmp_path / "server.log")
    servers.append(restarted)
    restarted.wait_ready()
    async with httpx.AsyncClient(timeout=10) as client:
        after = await _request(client, restarted.url, key, 1)
    assert after["status"] == 200, "healthy after restart"
    ok_ids = {r["request_id"] for r in results if r["status"] == 200}
    rows, spent = _rows(tmp_path / "sluice.db", key_id)
    billed = {request_id for request_id, _ in rows}
    lost = ok_ids - billed
    figures = {"ok_200_before_kill": len(ok_ids), "rows_lost": len(lost),
               "batch_interval_ms": UsageConfig().batch_interval_ms}  # fmt: skip
    print("SIGKILL " + orjson.dumps(figures).decode())
    # The loss is bounded by what one batch window completes, plus settlements in flight.
    assert len(lost) <= max(10, len(ok_ids) // 5), figures
    assert spent == sum(cost for _, cost in rows), "the spent counter never disagrees with rows"


def test_metrics_aggregate_across_worker_processes(
    tmp_path: Path, faulty: Make, servers: list[ServerProcess]
) -> None:
    """``--workers 2``: each scrape, whichever worker answers, counts every worker's requests."""
    require_service("Redis", "127.0.0.1", 6379)  # several workers need shared limits
    upstream = faulty("up")
    redis_url = f"redis://127.0.0.1:6379/{1 + secrets.randbelow(15)}"
    config = server_config(tmp_path, upstream, redis_url=redis_url)
    server = ServerProcess(config, free_port(), tmp_path / "server.log", workers=2)
    servers.append(server)
    server.wait_ready()
    key, _ = _create_key(server)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {key}", "connection": "close"}
    for _ in range(30):  # a fresh connection each time, so both workers take requests
        url = server.url + "/v1/chat/completions"
        assert httpx.post(url, json=body, headers=headers, timeout=10).status_code == 200
    expected = (
        'sluice_relay_requests_total{channel="up",endpoint="chat",model="test-resilience",'
        'status="200"} 30.0'
    )
    for _ in range(6):
        text = httpx.get(server.url + "/metrics", headers={"connection": "close"}, timeout=10).text
        assert expected in text
    assert (tmp_path / "prometheus").is_dir() and list((tmp_path / "prometheus").glob("*.db"))
