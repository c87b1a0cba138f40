"""Smoke test for the benchmark harness in bench/ so it cannot rot.

Starts the fake upstream as a separate process, drives it with the asyncio client for about
a second per case (and Sluice too when its CLI is installed), checks the numbers are sane and
renders the report from them.  Needs no wrk, LiteLLM, Portkey or network; ~10 s.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import fake_upstream, loadgen, procs, report, run, targets  # noqa: E402

pytestmark = pytest.mark.timeout(90)

AUTH = {"Authorization": f"Bearer {targets.UPSTREAM_KEY}"}
SECONDS = 0.8


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[targets.Context, str]]:
    ctx = targets.Context(run_dir=tmp_path_factory.mktemp("bench-run"))
    proc, url, _ = targets.start_upstream(ctx)
    try:
        yield ctx, url
    finally:
        proc.stop()
    assert not proc.alive()


def stream_run(url: str, headers: dict[str, str], chunks: int, conc: int) -> dict[str, Any]:
    body = loadgen.chat_body(targets.MODEL, chunks, stream=True)
    return loadgen.run_client(
        loadgen.ClientRun(url, body, headers, conc, SECONDS, expected_chunks=chunks)
    )


def json_run(url: str, headers: dict[str, str], conc: int) -> dict[str, Any]:
    body = loadgen.chat_body(targets.MODEL, 16, stream=False)
    return loadgen.run_client(loadgen.ClientRun(url, body, headers, conc, SECONDS))


def speech_run(url: str, headers: dict[str, str], conc: int) -> dict[str, Any]:
    body = loadgen.speech_body(targets.SPEECH_MODEL)
    expected = len(fake_upstream.SPEECH_WAV)
    return loadgen.run_client(
        loadgen.ClientRun(url, body, headers, conc, SECONDS, binary=True, expected_bytes=expected)
    )


def assert_sane_speech(res: dict[str, Any], conc: int) -> None:
    assert res["mode"] == "binary" and res["concurrency"] == conc
    assert res["errors"] == 0, res["error_samples"]
    assert res["ok"] >= conc and res["rps"] > 0
    assert res["bytes_min"] == res["bytes_max"] == res["bytes_expected"] > 0
    assert_sane_latency(res["ttfb_ms"])
    assert res["ttfb_ms"]["p50"] <= res["latency_ms"]["p50"]


def assert_sane_latency(lat: dict[str, float]) -> None:
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["mean"] > 0


def assert_sane_stream(res: dict[str, Any], chunks: int, conc: int) -> None:
    assert res["mode"] == "stream" and res["concurrency"] == conc
    assert res["errors"] == 0, res["error_samples"]
    assert res["ok"] >= conc and res["rps"] > 0
    assert res["chunks_expected"] == chunks
    assert res["chunks_min"] == res["chunks_max"] == chunks
    assert res["chunk_mismatches"] == 0 and res["incomplete_streams"] == 0
    assert res["done_seen"] == res["ok"], "every stream must end with data: [DONE]"
    assert res["usage_seen"] == res["ok"], "include_usage must yield a usage chunk"
    assert_sane_latency(res["latency_ms"])
    assert_sane_latency(res["ttft_ms"])
    assert res["ttft_ms"]["p50"] <= res["latency_ms"]["p50"]
    assert res["chunks_per_s"] >= res["rps"] * chunks * 0.5


def assert_sane_json(res: dict[str, Any], conc: int) -> None:
    assert res["mode"] == "json" and res["concurrency"] == conc
    assert res["errors"] == 0, res["error_samples"]
    assert res["ok"] >= conc and res["rps"] > 0
    assert res["usage_seen"] == res["ok"]
    assert_sane_latency(res["latency_ms"])


def test_direct_streaming_and_json(upstream: tuple[targets.Context, str]) -> None:
    ctx, url = upstream
    chat = f"{url}/v1/chat/completions"
    before = targets.upstream_stats(url)
    s1 = stream_run(chat, AUTH, 20, 1)
    s8 = stream_run(chat, AUTH, 20, 8)
    j4 = json_run(chat, AUTH, 4)
    tts = speech_run(f"{url}/v1/audio/speech", AUTH, 2)
    after = targets.upstream_stats(url)
    assert_sane_stream(s1, 20, 1)
    assert_sane_stream(s8, 20, 8)
    assert_sane_json(j4, 4)
    assert_sane_speech(tts, 2)
    assert after["speech"] - before["speech"] == tts["ok"]
    # Every request the client counted really went to the upstream, and nothing more.
    assert after["chat_stream"] - before["chat_stream"] == s1["ok"] + s8["ok"]
    assert after["chat_json"] - before["chat_json"] == j4["ok"]
    assert after["chunks_sent"] - before["chunks_sent"] == 20 * (s1["ok"] + s8["ok"])

    # The report renders from these numbers (json scenarios stand in for wrk's output).
    results = {
        "meta": {
            "mode": "smoke",
            "started": "now",
            "finished": "now",
            "invocation": "pytest",
            "plan": {
                **dataclasses.asdict(run.QUICK),
                "json_levels": [4],
                "stream_cases": [[20, 1], [20, 8]],
                "speech_levels": [2],
            },
            "machine": run.machine_info(),
            "upstream": {"chunk_delay_ms": 0.0},
        },
        "targets": {
            "direct": {
                "status": "ok",
                "workers": 1,
                "scenarios": {
                    "json_c4": j4,
                    "stream20_c1": s1,
                    "stream20_c8": s8,
                    "tts_ttfb_c2": tts,
                },  # fmt: skip
            },
            "litellm": {"status": "unavailable", "reason": "not installed in the smoke test"},
        },
        "soak": {},
    }
    text = report.render(results)
    assert f"{j4['rps']:,.0f}" in text
    speech_rows = [
        line for line in text.splitlines() if line.startswith("| direct (no gateway) | 2 |")
    ]
    assert len(speech_rows) == 1 and f"{tts['bytes_expected']:,}" in speech_rows[0]
    assert "LiteLLM proxy** — unavailable: not installed in the smoke test" in text


def test_stream_wire_format(upstream: tuple[targets.Context, str]) -> None:
    """OpenAI's SSE shape, with varied content (LiteLLM aborts on 100 identical chunks)."""
    _, url = upstream
    body = json.dumps(loadgen.chat_body(targets.MODEL, 30, stream=True)).encode()
    status, raw = procs.http_post_json(f"{url}/v1/chat/completions", body, AUTH)
    assert status == 200
    events = [ln[len(b"data: ") :] for ln in raw.split(b"\n") if ln.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert len(contents) == 30 and all(contents)
    assert all(a != b for a, b in zip(contents, contents[1:], strict=False))
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 30


def test_wrong_key_counts_as_errors(upstream: tuple[targets.Context, str]) -> None:
    _, url = upstream
    body = loadgen.chat_body(targets.MODEL, 5, stream=True)
    bad = {"Authorization": "Bearer sk-wrong"}
    res = loadgen.run_client(
        loadgen.ClientRun(f"{url}/v1/chat/completions", body, bad, 1, 5.0, max_requests=3)
    )
    assert res["ok"] == 0 and res["errors"] == 3
    assert "HTTP 401" in res["error_samples"][0]


def test_wrk_script_carries_body_and_headers() -> None:
    body = loadgen.chat_body(targets.MODEL, 16, stream=False)
    script = loadgen.wrk_script(body, {"Authorization": "Bearer k]]ey"})
    assert 'wrk.method = "POST"' in script
    assert '"max_tokens":16' in script
    assert "[=[Bearer k]]ey]=]" in script
    assert loadgen.WRK_MARK in script


def _sluice_cli_reason() -> str | None:
    """Why the Sluice part must be skipped, or None when it can run."""
    if importlib.util.find_spec("sluice") is None:
        return "the sluice package is not importable in this interpreter"
    cli = targets.sluice_cli()
    if cli is None:
        return "no `sluice` console script next to the interpreter (pip install -e .)"
    helped = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=60)
    if helped.returncode != 0 or "serve" not in helped.stdout:
        return f"`sluice --help` exited {helped.returncode} without a serve command"
    return None


def test_sluice_streaming_and_json(upstream: tuple[targets.Context, str]) -> None:
    reason = _sluice_cli_reason()
    if reason is not None:
        pytest.skip(f"Sluice part skipped: {reason}")
    ctx, url = upstream
    try:
        target = targets.sluice_target(ctx, "sqlite", workers=1, use_redis=False)
    except procs.Unavailable as exc:  # the CLI exists, so not starting is a real failure
        pytest.fail(f"Sluice did not start: {exc}")
    try:
        assert_sane_stream(stream_run(target.chat_url, target.headers, 20, 2), 20, 2)
        assert_sane_json(json_run(target.chat_url, target.headers, 2), 2)
        assert_sane_speech(speech_run(target.speech_url, target.headers, 2), 2)
        assert target.db is not None
        deadline = time.monotonic() + 5.0  # usage may be written in batches
        while True:
            rows = targets.table_counts(target.db)
            if any(n > 0 for name, n in rows.items() if "usage" in name):
                break
            assert time.monotonic() < deadline, f"no usage rows written: {rows}"
            time.sleep(0.2)
    finally:
        target.stop()
    assert target.process is not None and not target.process.alive()
    assert target.process not in procs.ManagedProcess.registry


def test_rss_goal_counts_the_soak_peak() -> None:
    """A worker's highest RSS is often reached in the soak; the goal row must see it."""
    results = json.loads((REPO_ROOT / "bench" / "results.json").read_text())
    name = next(n for n in results["soak"] if n.startswith("sluice"))
    for point in results["soak"][name]["rss"]:
        if point["role"] in ("worker", "main"):
            point["max_mib"] = 500.0  # far above anything the scenarios recorded
    rows = [line for line in report.goals_section(results) if line.startswith("| ")]
    rss_row = next(r for r in rows if r.startswith(f"| {report.title(name)} | RSS per worker"))
    assert "(500 MiB)" in rss_row and "**not met**" in rss_row


def test_bare_proxy_reference_and_its_report_section(
    upstream: tuple[targets.Context, str],
) -> None:
    ctx, url = upstream
    target = targets.bare_proxy_target(dataclasses.replace(ctx, upstream=url, workers=1))
    try:
        proxied = {
            "stream20_c2": stream_run(target.chat_url, target.headers, 20, 2),
            "json_c2": json_run(target.chat_url, target.headers, 2),
        }
    finally:
        target.stop()
    assert target.process is not None and not target.process.alive()
    assert_sane_stream(proxied["stream20_c2"], 20, 2)
    assert_sane_json(proxied["json_c2"], 2)
    chat = f"{url}/v1/chat/completions"
    direct = {"stream20_c2": stream_run(chat, AUTH, 20, 2), "json_c2": json_run(chat, AUTH, 2)}
    assert direct["stream20_c2"]["stream_chunks_per_s_p50"] > 0

    plan = {**dataclasses.asdict(run.QUICK), "json_levels": [2], "stream_cases": [[20, 2]]}
    results = {
        "meta": {
            "mode": "smoke", "started": "now", "finished": "now", "invocation": "pytest",
            "plan": plan, "machine": run.machine_info(), "upstream": {"chunk_delay_ms": 0.0},
        },
        "targets": {
            "direct": {"status": "ok", "workers": 1, "scenarios": direct},
            "bare-proxy": {"status": "ok", "workers": 1, "scenarios": proxied},
            # A stand-in so the goals section renders (its figures are the proxy's own).
            "sluice-sqlite": {"status": "ok", "workers": 1, "scenarios": proxied},
        },
        "soak": {},
    }  # fmt: skip
    text = report.render(results)
    assert "reference proxy with no logic" in text
    in_stream = "chunk rate inside a stream (p50) within 20% of direct (streaming 20 chunks, c=2)"
    rows = [line for line in text.splitlines() if in_stream in line]
    assert len(rows) == 2  # the Sluice target's row and the reference's
    ratio = (
        proxied["stream20_c2"]["stream_chunks_per_s_p50"]
        / direct["stream20_c2"]["stream_chunks_per_s_p50"]
    )
    assert f"{ratio:.2f}× direct" in rows[1]


def test_a_target_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    # A server that answers nothing: wait_ready gives up, stops its process group and says why.
    argv = [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"]
    proc = procs.ManagedProcess("silent", argv, tmp_path / "silent.log")
    with pytest.raises(procs.Unavailable, match="silent not ready after 1s"):
        procs.wait_ready(proc, f"http://127.0.0.1:{procs.free_port()}/health", 1.0)
    assert not proc.alive() and proc not in procs.ManagedProcess.registry
    crashing = procs.ManagedProcess("crash", [sys.executable, "-c", "raise SystemExit(3)"],
                                    tmp_path / "crash.log")  # fmt: skip
    with pytest.raises(procs.Unavailable, match="exited with code 3"):
        procs.wait_ready(crashing, "http://127.0.0.1:9/health", 10.0)
    assert crashing not in procs.ManagedProcess.registry
