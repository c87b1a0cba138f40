"""Side-by-side benchmark: Sluice vs LiteLLM proxy vs Portkey gateway vs direct-to-upstream.

Every target talks to the same fake OpenAI upstream (bench/fake_upstream.py) in the same
run.  Non-streaming load comes from wrk, streaming load from an aiohttp client.  Results go
to bench/results.json, bench/RESULTS.md, bench/latency.png and bench/rss.png.

Run from the repository root with the project venv:

    .venv/bin/python bench/run.py [--quick] [--only TARGETS] [--soak-requests N] [--skip-peers]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import importlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fake_upstream, loadgen, report, targets  # noqa: E402
from bench.procs import (  # noqa: E402
    CpuMeter,
    ManagedProcess,
    RssSampler,
    Unavailable,
    process_tree,
    run_logged,
    wait_quiet,
    worker_rss,
)
from bench.targets import BENCH_DIR, MODEL, Context, Target  # noqa: E402

# Targets whose configuration routes POST /v1/audio/speech (the peers' configs do not).
SPEECH_KINDS = frozenset({"direct", "floor", "sluice"})
ALL_TARGETS = ("direct", "bare-proxy", "sluice-sqlite", "sluice-pg", "litellm", "portkey")
PEERS = ("litellm", "portkey")
BENCH_PY_DEPS = (("psutil", "psutil"), ("matplotlib", "matplotlib"))


@dataclass(frozen=True)
class Plan:
    json_levels: tuple[int, ...]
    json_duration_s: float
    stream_cases: tuple[tuple[int, int], ...]
    stream_duration_s: float
    warmup_s: float
    soak_requests: int
    soak_concurrency: int
    soak_slice_s: float
    soak_max_s: float
    json_tokens: int = 16
    speech_levels: tuple[int, ...] = (1, 8)  # concurrency of the TTS time-to-first-byte runs


FULL = Plan(
    json_levels=(1, 8, 32, 64),
    json_duration_s=10,
    stream_cases=((20, 1), (20, 32), (200, 1), (200, 32)),
    stream_duration_s=10,
    warmup_s=3,
    soak_requests=200_000,
    soak_concurrency=64,
    soak_slice_s=15,
    soak_max_s=1800,
)
QUICK = replace(
    FULL,
    json_levels=(1, 64),
    json_duration_s=3,
    stream_duration_s=3,
    warmup_s=1,
    soak_requests=20_000,
    soak_slice_s=5,
    soak_max_s=300,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- setup


def ensure_python_deps() -> list[str]:
    """Install psutil/matplotlib into the running venv if missing; return what still is."""
    missing = [pip for mod, pip in BENCH_PY_DEPS if importlib.util.find_spec(mod) is None]
    if missing:
        log(f"installing bench deps into {sys.prefix}: {' '.join(missing)}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *missing], check=False, timeout=900
        )
        importlib.invalidate_caches()
    return [pip for mod, pip in BENCH_PY_DEPS if importlib.util.find_spec(mod) is None]


def ensure_wrk(ctx: Context) -> tuple[str | None, str]:
    """wrk from PATH, else Debian's package (apt-get update once, then install)."""
    found = shutil.which("wrk")
    if found:
        return found, "found on PATH"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "wrk missing and apt-get unavailable (not root): aiohttp client used instead"
    log("installing wrk with apt-get ...")
    apt_log = ctx.logs / "apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run_logged(["apt-get", "update", "-q"], apt_log, 600, env=env)
        done = run_logged(["apt-get", "install", "-y", "-q", "wrk"], apt_log, 600, env=env)
    except subprocess.TimeoutExpired:
        return None, "apt-get timed out: aiohttp client used instead"
    found = shutil.which("wrk")
    if done.returncode != 0 or not found:
        return (
            None,
            f"apt-get install wrk failed (rc={done.returncode}): aiohttp client used instead",
        )
    return found, "installed with apt-get"


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "cpu_model": cpu,
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(wrk: str | None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in ("aiohttp", "uvloop", "httptools", "orjson", "psutil", "matplotlib"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    out["wrk"] = _first_line([wrk, "-v"]) if wrk else "not installed"
    out["node"] = targets.node_version()
    out["sluice"] = targets.sluice_version()
    out["litellm"] = (
        targets.installed_litellm_version() or f"{targets.LITELLM_VERSION} (not installed)"
    )
    out["portkey"] = targets.PORTKEY_VERSION
    out["@hono/node-server (npm override)"] = targets.hono_node_server_version() or "not installed"
    return out


# --------------------------------------------------------------------------- measuring


def build_target(ctx: Context, name: str) -> Target:
    if name == "direct":
        return targets.direct_target(ctx)
    if name == "bare-proxy":
        return targets.bare_proxy_target(ctx)
    if name.startswith("sluice-"):
        return targets.sluice_target(ctx, name.removeprefix("sluice-"))
    if name == "litellm":
        return targets.litellm_target(ctx)
    if name == "portkey":
        return targets.portkey_target(ctx)
    raise ValueError(name)


def probe(target: Target, stream: bool) -> str | None:
    """One request through the target; None when it looks right, else what went wrong."""
    tokens = 5
    body = loadgen.chat_body(MODEL, tokens, stream)
    run = loadgen.ClientRun(
        target.chat_url, body, target.headers, 1, 60, max_requests=1, expected_chunks=tokens
    )
    res = loadgen.run_client(run)
    if res["ok"] != 1:  # incomplete streams count as errors
        return f"{'stream' if stream else 'JSON'} probe failed: {'; '.join(res['error_samples'])}"
    return None


def measured(
    target: Target,
    upstream: str,
    kind: str,
    quiet_wait_s: float,
    fn: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run one scenario; add what the upstream saw and how busy other processes were."""
    svc = target.services
    load_before = wait_quiet(quiet_wait_s, services=svc) if quiet_wait_s > 0 else None
    before = targets.upstream_stats(upstream).get(kind, 0)
    try:
        with CpuMeter(svc) as meter:
            res = fn()
    except Exception as exc:  # one broken scenario must not end the run
        return {"error": f"{type(exc).__name__}: {exc}"}
    res["upstream_requests"] = targets.upstream_stats(upstream).get(kind, 0) - before
    res["foreign_cpu_cores"] = meter.foreign_cores()
    res["foreign_cpu_cores_before"] = load_before
    return res


def json_load(
    target: Target, plan: Plan, wrk: str | None, conc: int, seconds: float
) -> dict[str, Any]:
    body = loadgen.chat_body(MODEL, plan.json_tokens, False)
    if wrk:
        return loadgen.run_wrk(
            loadgen.WrkRun(target.chat_url, body, target.headers, conc, seconds, wrk=wrk)
        )
    return loadgen.run_client(
        loadgen.ClientRun(target.chat_url, body, target.headers, conc, seconds)
    )


def stream_load(target: Target, chunks: int, conc: int, seconds: float) -> dict[str, Any]:
    body = loadgen.chat_body(MODEL, chunks, True)
    run = loadgen.ClientRun(
        target.chat_url, body, target.headers, conc, seconds, expected_chunks=chunks
    )
    return loadgen.run_client(run)


def speech_load(target: Target, conc: int, seconds: float) -> dict[str, Any]:
    body = loadgen.speech_body(targets.SPEECH_MODEL)
    run = loadgen.ClientRun(
        target.speech_url, body, target.headers, conc, seconds, binary=True,
        expected_bytes=len(fake_upstream.SPEECH_WAV),
    )  # fmt: skip
    return loadgen.run_client(run)


def run_target(
    target: Target, plan: Plan, wrk: str | None, upstream: str, quiet_wait_s: float
) -> dict[str, Any]:
    res: dict[str, Any] = {"status": "ok", **target.describe(), "scenarios": {}}
    problem = probe(target, stream=False)
    if problem:
        raise Unavailable(problem)
    stream_problem = probe(target, stream=True)
    if stream_problem:
        res["notes"].append(f"streaming broken: {stream_problem}")
    sampler = RssSampler(target.process.pid, 1.0) if target.process else None
    with sampler if sampler is not None else contextlib.nullcontext():
        log(f"  warm-up {plan.warmup_s:.0f}s")
        json_load(target, plan, wrk, 16, plan.warmup_s)
        for conc in plan.json_levels:
            key = f"json_c{conc}"
            log(f"  {key}")
            res["scenarios"][key] = measured(
                target,
                upstream,
                "chat_json",
                quiet_wait_s,
                functools.partial(json_load, target, plan, wrk, conc, plan.json_duration_s),
            )
        for chunks, conc in plan.stream_cases:
            key = f"stream{chunks}_c{conc}"
            if stream_problem:
                res["scenarios"][key] = {"error": stream_problem}
                continue
            log(f"  {key}")
            res["scenarios"][key] = measured(
                target,
                upstream,
                "chat_stream",
                quiet_wait_s,
                functools.partial(stream_load, target, chunks, conc, plan.stream_duration_s),
            )
        for conc in plan.speech_levels if target.kind in SPEECH_KINDS else ():
            key = f"tts_ttfb_c{conc}"
            log(f"  {key}")
            res["scenarios"][key] = measured(
                target,
                upstream,
                "speech",
                quiet_wait_s,
                functools.partial(speech_load, target, conc, plan.stream_duration_s),
            )
    if sampler is not None:
        res["rss"] = sampler.summary()
        res["rss_worker_max_mib"] = max(worker_rss(res["rss"]), default=None)
    if target.db is not None:
        try:
            res["db_rows"] = targets.table_counts(target.db)
        except Exception as exc:
            res["db_rows_error"] = f"{type(exc).__name__}: {exc}"
    return res


def soak(target: Target, plan: Plan, wrk: str | None, requests: int) -> dict[str, Any]:
    """Back-to-back load slices until ``requests`` are done, sampling every worker's RSS."""
    assert target.process is not None
    slices: list[dict[str, Any]] = []
    total = errors = 0
    last_rps = 0.0
    start = time.monotonic()
    with RssSampler(target.process.pid, 2.0) as sampler:
        while total < requests and time.monotonic() - start < plan.soak_max_s:
            seconds = plan.soak_slice_s
            if last_rps > 0:
                seconds = min(seconds, max(2.0, (requests - total) / last_rps + 1.0))
            r = json_load(target, plan, wrk, plan.soak_concurrency, seconds)
            total += r["requests"]
            errors += r["errors"]
            last_rps = r["rps"]
            slices.append(
                {
                    "t_end_s": round(time.monotonic() - start, 1),
                    "requests": r["requests"],
                    "rps": r["rps"],
                    "errors": r["errors"],
                    "p50_ms": r["latency_ms"]["p50"],
                    "p99_ms": r["latency_ms"]["p99"],
                }
            )
            log(f"  soak {total:,}/{requests:,} requests, {r['rps']:.0f} req/s, {errors} errors")
    elapsed = time.monotonic() - start
    per_proc = sampler.summary()
    for p in per_proc:
        p["growth_mib"] = round(p["last_mib"] - p["first_mib"], 1)
    return {
        "concurrency": plan.soak_concurrency,
        "target_requests": requests,
        "requests": total,
        "errors": errors,
        "duration_s": round(elapsed, 1),
        "rps": round(total / elapsed, 1) if elapsed > 0 else 0.0,
        "complete": total >= requests,
        "slices": slices,
        "rss": per_proc,
        "rss_series": sampler.series(),
    }


# --------------------------------------------------------------------------- main


def select_targets(only: str | None, skip_peers: bool) -> list[str]:
    names = list(ALL_TARGETS)
    if only:
        wanted = {w.strip() for w in only.split(",") if w.strip()}
        if "sluice" in wanted:
            wanted |= {"sluice-sqlite", "sluice-pg"}
        unknown = wanted - set(ALL_TARGETS) - {"sluice"}
        if unknown:
            raise SystemExit(
                f"unknown target(s) {sorted(unknown)}; choose from {', '.join(ALL_TARGETS)}, sluice"
            )
        names = [n for n in names if n in wanted]
        if "direct" not in names:
            names.insert(0, "direct")  # the baseline every "added latency" figure needs
    if skip_peers:
        names = [n for n in names if n not in PEERS]
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="short durations, c=1/64 only, 20k-request soak"
    )
    ap.add_argument(
        "--only", help=f"comma list from {', '.join(ALL_TARGETS)}, sluice (direct always runs)"
    )
    ap.add_argument("--soak-requests", type=int, help="requests for the Sluice soak (0 = no soak)")
    ap.add_argument("--skip-peers", action="store_true", help="skip LiteLLM and Portkey")
    ap.add_argument("--duration", type=float, help="seconds per scenario (overrides the plan)")
    ap.add_argument("--workers", type=int, default=2, help="workers for Sluice and LiteLLM")
    ap.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="fake upstream gap between chunks"
    )
    ap.add_argument(
        "--latency-ms", type=float, default=0.0, help="fake upstream delay per response"
    )
    ap.add_argument(
        "--out", type=Path, default=BENCH_DIR, help="where results/plots go (default bench/)"
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each scenario wait up to this many seconds for other processes to go "
        "quiet (< 0.25 cores); 0 = don't wait. Their load is recorded either way.",
    )
    return ap.parse_args(argv)


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.soak_requests is not None:
        plan = replace(plan, soak_requests=max(0, args.soak_requests))
    if args.duration is not None:
        plan = replace(plan, json_duration_s=args.duration, stream_duration_s=args.duration)
    names = select_targets(args.only, args.skip_peers)
    signal.signal(signal.SIGTERM, _on_sigterm)

    run_dir = BENCH_DIR / ".run"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "logs").mkdir(parents=True)
    ctx = Context(run_dir=run_dir, workers=args.workers)
    still_missing = ensure_python_deps()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    invocation = shlex.join(
        [os.path.relpath(sys.executable), *[os.path.relpath(sys.argv[0])], *sys.argv[1:]]
    )
    results: dict[str, Any] = {
        "meta": {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "invocation": invocation,
            "plan": asdict(plan),
            "targets_requested": names,
            "machine": machine_info(),
            "missing_python_deps": still_missing,
            "upstream": {"latency_ms": args.latency_ms, "chunk_delay_ms": args.chunk_delay_ms},
        },
        "targets": {},
        "soak": {},
    }
    upstream_proc: ManagedProcess | None = None
    try:
        wrk, wrk_note = ensure_wrk(ctx)
        results["meta"]["wrk"] = {"path": wrk, "note": wrk_note}
        log(f"wrk: {wrk or 'unavailable'} ({wrk_note})")
        snap = targets.snapshot_sluice(ctx)
        if snap:
            log(f"Sluice code snapshot: {snap}")
        results["meta"]["versions"] = versions(wrk)
        upstream_proc, upstream, up_cmd = targets.start_upstream(
            ctx, latency_ms=args.latency_ms, chunk_delay_ms=args.chunk_delay_ms
        )
        results["meta"]["upstream"].update({"url": upstream, "command": up_cmd})
        results["meta"]["wrk_script_example"] = loadgen.wrk_script(
            loadgen.chat_body(MODEL, plan.json_tokens, False),
            {"Authorization": "Bearer <target key>"},
        )
        log(f"fake upstream at {upstream}")
        for name in names:
            log(f"== {name}")
            target: Target | None = None
            try:
                target = build_target(ctx, name)
                log(f"  ready ({target.version}, workers={target.workers})")
                results["targets"][name] = run_target(target, plan, wrk, upstream, args.quiet_wait)
                if (
                    target.kind == "sluice"
                    and plan.soak_requests > 0
                    and target.process is not None
                ):
                    log(f"  soak: {plan.soak_requests:,} requests at c={plan.soak_concurrency}")
                    results["soak"][name] = soak(target, plan, wrk, plan.soak_requests)
                    if target.db is not None:
                        with contextlib.suppress(Exception):
                            results["targets"][name]["db_rows_after_soak"] = targets.table_counts(
                                target.db
                            )
            except Unavailable as exc:
                log(f"  unavailable: {str(exc).splitlines()[0]}")
                results["targets"][name] = {"status": "unavailable", "reason": str(exc)}
            except Exception as exc:
                log(f"  failed: {type(exc).__name__}: {exc}")
                results["targets"][name] = {
                    "status": "failed",
                    "reason": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            finally:
                if target is not None:
                    if target.process is not None and results["targets"].get(name):
                        summary = target.process.log_summary()
                        summary_path = os.path.relpath(target.process.log_path)
                        results["targets"][name]["server_log"] = {"path": summary_path, **summary}
                    target.stop()
        results["meta"]["upstream"]["stats"] = targets.upstream_stats(upstream)
        results["meta"]["upstream"]["rss"] = process_tree(upstream_proc.pid)
    finally:
        ManagedProcess.stop_all()
        results["meta"]["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        results["meta"]["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        at_start = results["meta"].get("versions", {})
        results["meta"]["versions"] = versions(results["meta"].get("wrk", {}).get("path"))
        if "sluice" in at_start:  # the code the run measured, not the tree at the end
            results["meta"]["versions"]["sluice"] = at_start["sluice"]
        json_path = out_dir / "results.json"
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        written = report.write_all(results, out_dir)
        log(f"wrote {json_path} and {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
