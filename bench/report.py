"""Turn results.json into RESULTS.md, latency.png and rss.png.

``bench/run.py`` calls :func:`write_all`; to re-render from saved data run
``python bench/report.py [bench/results.json]``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Results = dict[str, Any]

TITLES = {
    "direct": "direct (no gateway)",
    "bare-proxy": "bare proxy (reference: uvicorn + aiohttp, no logic)",
    "sluice-sqlite": "Sluice (SQLite)",
    "sluice-pg": "Sluice (PostgreSQL + Redis)",
    "litellm": "LiteLLM proxy",
    "portkey": "Portkey gateway",
}


def title(name: str) -> str:
    return TITLES.get(name, name)


def ms(x: float | None) -> str:
    if x is None:
        return "–"
    ax = abs(x)
    if ax < 1:
        return f"{x:.3f}"
    if ax < 10:
        return f"{x:.2f}"
    if ax < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def num(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def loadavg(values: Sequence[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "?"


def first_line(text: Any) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def ok_targets(results: Results) -> list[str]:
    return [n for n, t in results["targets"].items() if t.get("status") == "ok"]


def scenario(results: Results, target: str, key: str) -> dict[str, Any] | None:
    t = results["targets"].get(target, {})
    s = t.get("scenarios", {}).get(key)
    return s if s and "error" not in s else None


def metric(s: dict[str, Any] | None, *path: str) -> float | None:
    cur: Any = s
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return float(cur) if isinstance(cur, int | float) else None


def json_keys(results: Results) -> list[str]:
    levels = results["meta"]["plan"]["json_levels"]
    return [f"json_c{c}" for c in levels]


def stream_keys(results: Results) -> list[str]:
    return [f"stream{n}_c{c}" for n, c in results["meta"]["plan"]["stream_cases"]]


def label(key: str) -> str:
    if key.startswith("json_c"):
        return f"non-streaming, c={key.removeprefix('json_c')}"
    chunks, conc = key.removeprefix("stream").split("_c")
    return f"streaming {chunks} chunks, c={conc}"


def added(results: Results, target: str, key: str, *path: str) -> float | None:
    if target == "direct":
        return None  # the baseline itself
    mine = metric(scenario(results, target, key), *path)
    base = metric(scenario(results, "direct", key), *path)
    return None if mine is None or base is None else mine - base


NOISY_CORES = 0.3


def load(s: dict[str, Any]) -> str:
    """CPU used by processes outside the harness during the scenario, in cores."""
    x = s.get("foreign_cpu_cores")
    if x is None:
        return "–"
    return f"**{x:.2f}** ⚠" if x >= NOISY_CORES else f"{x:.2f}"


def noisy(results: Results) -> list[str]:
    """Scenario labels whose run shared the CPU with someone else's work."""
    out = []
    for n, t in results["targets"].items():
        for k, s in t.get("scenarios", {}).items():
            if isinstance(s, dict) and (s.get("foreign_cpu_cores") or 0) >= NOISY_CORES:
                out.append(f"{title(n)} / {label(k)} ({s['foreign_cpu_cores']:.2f} cores)")
    return out


def worker_rss_text(t: dict[str, Any]) -> str:
    rss = [p for p in t.get("rss", []) if p["role"] in ("worker", "main")]
    if not rss:
        return "–"
    return " / ".join(f"{p['max_mib']:.0f}" for p in rss)


# --------------------------------------------------------------------------- markdown


def noise_warning(results: Results) -> list[str]:
    bad = noisy(results)
    measured = any(
        isinstance(s, dict) and "foreign_cpu_cores" in s
        for t in results["targets"].values()
        for s in t.get("scenarios", {}).values()
    )
    if not measured:
        return ["(The load from other processes was not measured in this run.)", ""]
    if not bad:
        return [
            "Other processes used < "
            f"{NOISY_CORES} cores during every scenario (column *other load*).",
            "",
        ]
    shown = "; ".join(bad[:8]) + (f"; and {len(bad) - 8} more" if len(bad) > 8 else "")
    return [
        f"> ⚠ **Noisy run**: processes outside the benchmark used ≥ {NOISY_CORES} cores during "
        f"{len(bad)} scenario(s) — those figures are pessimistic: {shown}.",
        "",
    ]


def headline(results: Results) -> list[str]:
    names = ok_targets(results)
    levels = results["meta"]["plan"]["json_levels"]
    lo, hi = f"json_c{min(levels)}", f"json_c{max(levels)}"
    s_lo = "stream20_c1"
    s_hi = "stream200_c32"
    header = [
        "target",
        "workers",
        f"RPS {label(lo).split(', ')[1]}",
        f"RPS {label(hi).split(', ')[1]}",
        f"p50 / p99 ms ({label(lo).split(', ')[1]})",
        f"added p50 / p99 ms ({label(lo).split(', ')[1]})",
        f"p50 / p99 ms ({label(hi).split(', ')[1]})",
        f"added p50 / p99 ms ({label(hi).split(', ')[1]})",
        "TTFT added p50 ms (20 ch, c=1)",
        "TTFT added p50 ms (200 ch, c=32)",
        "RSS per worker MiB (max)",
    ]
    rows = []
    for n in names:
        t = results["targets"][n]
        a, b = scenario(results, n, lo), scenario(results, n, hi)
        rows.append(
            [
                title(n),
                str(t.get("workers", "–")),
                num(metric(a, "rps")),
                num(metric(b, "rps")),
                f"{ms(metric(a, 'latency_ms', 'p50'))} / {ms(metric(a, 'latency_ms', 'p99'))}",
                f"{ms(added(results, n, lo, 'latency_ms', 'p50'))} / "
                f"{ms(added(results, n, lo, 'latency_ms', 'p99'))}",
                f"{ms(metric(b, 'latency_ms', 'p50'))} / {ms(metric(b, 'latency_ms', 'p99'))}",
                f"{ms(added(results, n, hi, 'latency_ms', 'p50'))} / "
                f"{ms(added(results, n, hi, 'latency_ms', 'p99'))}",
                ms(added(results, n, s_lo, "ttft_ms", "p50")),
                ms(added(results, n, s_hi, "ttft_ms", "p50")),
                worker_rss_text(t),
            ]
        )
    return table(header, rows)


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _latency_and_stream_rows(results: Results, n: str) -> list[list[str]]:
    """The goals on added latency and on streaming, for a Sluice target or the reference."""
    rows: list[list[str]] = []
    for pct, bound in (("p50", 0.5), ("p99", 2.0)):
        value = added(results, n, "json_c1", "latency_ms", pct)
        rows.append(
            [
                title(n),
                f"added {pct} at c=1 ≤ {bound:g} ms",
                ms(value),
                _verdict(_at_most(value, bound)),
            ]
        )
    value = added(results, n, "stream20_c1", "ttft_ms", "p50")
    rows.append(
        [title(n), "added TTFT p50 at c=1 ≤ 1 ms", ms(value), _verdict(_at_most(value, 1.0))]
    )
    if "speech_levels" in results["meta"]["plan"]:  # runs before the TTS scenario have none
        value = added(results, n, "tts_ttfb_c1", "ttfb_ms", "p50")
        rows.append(
            [title(n), "added TTS time to first byte p50 at c=1 ≤ 1 ms", ms(value),
             _verdict(_at_most(value, 1.0))]
        )  # fmt: skip
    for key in stream_keys(results):
        # The run's chunks over its duration: every stream's set-up counts, so short streams
        # measure mostly per-request cost; and, beside it, the rate inside a stream (after
        # its first chunk), which is what a client reading a long answer sees.
        for field, what in (
            ("chunks_per_s", "chunks/s"),
            ("stream_chunks_per_s_p50", "chunk rate inside a stream (p50)"),
        ):
            got = metric(scenario(results, n, key), field)
            base = metric(scenario(results, "direct", key), field)
            value = None if got is None or not base else got / base
            rows.append(
                [
                    title(n),
                    f"{what} within 20% of direct ({label(key)})",
                    "–" if value is None else f"{value:.2f}× direct",
                    _verdict(_at_least(value, 0.8)),
                ]
            )
    return rows


def goals_section(results: Results) -> list[str]:
    """Each Sluice target against the targets of the performance issue, from this run only."""
    names = ok_targets(results)
    rows: list[list[str]] = []
    for n in (x for x in names if x.startswith("sluice")):
        mine = scenario(results, n, "json_c64")
        rps = metric(mine, "rps")
        for peer, bound in (("litellm", 10.0), ("portkey", 2.0)):
            theirs = metric(scenario(results, peer, "json_c64"), "rps")
            value = None if rps is None or not theirs else rps / theirs
            shown = "–" if value is None else f"{value:.2f}×"
            goal = f"RPS at c=64 ≥ {bound:g}× {title(peer)}"
            rows.append([title(n), goal, shown, _verdict(_at_least(value, bound))])
        rows += _latency_and_stream_rows(results, n)
        soak = (results.get("soak") or {}).get(n)
        # The peak is over the scenarios *and* the soak: the soak runs last and
        # longest, so a worker's highest RSS is usually seen there.
        workers = [
            p
            for p in [*results["targets"][n].get("rss", []), *(soak or {}).get("rss", [])]
            if p["role"] in ("worker", "main")
        ]
        peak = max((p["max_mib"] for p in workers), default=None)
        peak_mb = None if peak is None else peak * 1.048576
        rows.append(
            [
                title(n),
                "RSS per worker ≤ 120 MB (max over scenarios and soak)",
                "–" if peak is None else f"{peak_mb:.0f} MB ({peak:.0f} MiB)",
                _verdict(_at_most(peak_mb, 120.0)),
            ]
        )
        if soak:
            growth = [
                p["growth_mib"] / p["first_mib"]
                for p in soak["rss"]
                if p["role"] in ("worker", "main") and p["first_mib"]
            ]  # noqa: E501
            worst = max(growth, default=None)
            goal = f"RSS growth < 10% across the soak ({soak['requests']:,} requests)"
            rows.append(
                [
                    title(n),
                    goal,
                    "–" if worst is None else f"{worst:.1%}",
                    _verdict(_at_most(worst, 0.1)),
                ]
            )
    if not rows:
        return ["No Sluice target ran.", ""]
    out = table(["target", "goal (performance issue)", "this run", "verdict"], rows)
    if "bare-proxy" in names:
        out += [
            "The same latency and streaming goals for the reference proxy with no logic at all "
            "(what the stack itself costs on this machine; not a goal of its own):",
            "",
        ]
        out += table(
            ["target", "goal (performance issue)", "this run", "verdict"],
            _latency_and_stream_rows(results, "bare-proxy"),
        )
    return out


def ratios(results: Results) -> list[str]:
    names = ok_targets(results)
    sluices = [n for n in names if n.startswith("sluice")]
    peers = [n for n in names if n in ("litellm", "portkey")]
    keys = json_keys(results) + stream_keys(results)
    out: list[str] = []
    if not sluices:
        reasons = [
            f"{title(n)}: {first_line(t.get('reason') or t.get('status', ''))}"
            for n, t in results["targets"].items()
            if n.startswith("sluice")
        ]
        out.append(
            "**Sluice was not measured in this run**, so there are no Sluice/peer ratios yet."
        )
        out += [f"- {r}" for r in reasons] + [""]
        out.append("Peers against direct (throughput as a share of direct):")
        out.append("")
        rows = []
        for k in keys:
            base = metric(scenario(results, "direct", k), "rps")
            rows.append(
                [label(k), *[ratio(metric(scenario(results, p, k), "rps"), base) for p in peers]]
            )
        return out + table(["scenario", *[f"{title(p)} / direct RPS" for p in peers]], rows)
    for s in sluices:
        header = ["scenario"]
        for p in peers:
            header += [f"{title(s)} / {title(p)} RPS", f"{title(p)} / {title(s)} p50 latency"]
        header.append(f"{title(s)} / direct RPS")
        rows = []
        for k in keys:
            mine = scenario(results, s, k)
            row = [label(k)]
            for p in peers:
                theirs = scenario(results, p, k)
                row += [
                    ratio(metric(mine, "rps"), metric(theirs, "rps")),
                    ratio(metric(theirs, "latency_ms", "p50"), metric(mine, "latency_ms", "p50")),
                ]
            row.append(ratio(metric(mine, "rps"), metric(scenario(results, "direct", k), "rps")))
            rows.append(row)
        out += table(header, rows)
    return out


def json_tables(results: Results) -> list[str]:
    out: list[str] = []
    for k in json_keys(results):
        rows = []
        base = metric(scenario(results, "direct", k), "rps")
        for n in ok_targets(results):
            s = scenario(results, n, k)
            if s is None:
                err = results["targets"][n].get("scenarios", {}).get(k, {}).get("error", "not run")
                rows.append([title(n), f"error: {err}", *["–"] * 9])
                continue
            lat = s["latency_ms"]
            rows.append(
                [
                    title(n),
                    num(s["rps"]),
                    ratio(s["rps"], base),
                    ms(lat["p50"]),
                    ms(lat["p90"]),
                    ms(lat["p99"]),
                    ms(added(results, n, k, "latency_ms", "p50")),
                    ms(added(results, n, k, "latency_ms", "p99")),
                    f"{s['errors']:,} / {s['requests']:,}",
                    num(s.get("upstream_requests")),
                    load(s),
                ]
            )
        out += [f"#### {label(k)}", ""]
        header = ["target", "RPS", "of direct", "p50 ms", "p90 ms", "p99 ms", "added p50 ms"]
        header += ["added p99 ms", "errors / requests", "upstream saw", "other load"]
        out += table(header, rows)
    return out


def stream_tables(results: Results) -> list[str]:
    out: list[str] = []
    for k in stream_keys(results):
        rows = []
        for n in ok_targets(results):
            s = scenario(results, n, k)
            if s is None:
                err = results["targets"][n].get("scenarios", {}).get(k, {}).get("error", "not run")
                rows.append([title(n), f"error: {err}", *["–"] * 10])
                continue
            rows.append(
                [
                    title(n),
                    num(s["rps"]),
                    num(s["chunks_per_s"]),
                    f"{ms(s['ttft_ms']['p50'])} / {ms(s['ttft_ms']['p99'])}",
                    ms(added(results, n, k, "ttft_ms", "p50")),
                    f"{ms(s['latency_ms']['p50'])} / {ms(s['latency_ms']['p99'])}",
                    ms(added(results, n, k, "latency_ms", "p50")),
                    f"{s['chunks_min']}–{s['chunks_max']} (want {s['chunks_expected']})",
                    f"{s['usage_seen']:,}",
                    f"{s['errors']:,} / {s['requests']:,}",
                    num(s.get("upstream_requests")),
                    load(s),
                ]
            )
        out += [f"#### {label(k)}", ""]
        header = ["target", "streams/s", "chunks/s", "TTFT p50 / p99 ms", "TTFT added p50 ms"]
        header += ["total p50 / p99 ms", "total added p50 ms", "content chunks per stream"]
        header += ["usage chunks seen", "errors / streams", "upstream saw", "other load"]
        out += table(header, rows)
    return out


def speech_keys(results: Results) -> list[str]:
    return [f"tts_ttfb_c{c}" for c in results["meta"]["plan"].get("speech_levels", ())]


def speech_tables(results: Results) -> list[str]:
    keys = speech_keys(results)
    if not keys:
        return ["Not measured in this run.", ""]
    rows = []
    for k in keys:
        for n in ok_targets(results):
            s = scenario(results, n, k)
            if s is None:
                err = results["targets"][n].get("scenarios", {}).get(k, {}).get("error", "not run")
                rows.append([title(n), k.removeprefix("tts_ttfb_c"), f"error: {err}", *["–"] * 6])
                continue
            rows.append(
                [
                    title(n),
                    k.removeprefix("tts_ttfb_c"),
                    num(s["rps"]),
                    f"{ms(s['ttfb_ms']['p50'])} / {ms(s['ttfb_ms']['p99'])}",
                    ms(added(results, n, k, "ttfb_ms", "p50")),
                    f"{ms(s['latency_ms']['p50'])} / {ms(s['latency_ms']['p99'])}",
                    f"{s['bytes_min']:,}–{s['bytes_max']:,} (want {s['bytes_expected']:,})",
                    f"{s['errors']:,} / {s['requests']:,}",
                    num(s.get("upstream_requests")),
                ]
            )
    header = ["target", "c", "answers/s", "TTFB p50 / p99 ms", "TTFB added p50 ms"]
    header += ["total p50 / p99 ms", "bytes per answer", "errors / requests", "upstream saw"]
    return table(header, rows)


def memory_section(results: Results) -> list[str]:
    rows = []
    for n in ok_targets(results):
        for p in results["targets"][n].get("rss", []):
            rows.append(
                [
                    title(n),
                    str(p["pid"]),
                    p["role"],
                    p["name"],
                    ms(p["first_mib"]),
                    ms(p["max_mib"]),
                    ms(p["last_mib"]),
                ]
            )
    up = results["meta"].get("upstream", {}).get("rss", [])
    for p in up:
        rows.append(
            ["fake upstream", str(p["pid"]), p["role"], p["name"], "–", "–", ms(p["rss_mib"])]
        )
    if not rows:
        return ["(no RSS samples: psutil missing?)", ""]
    return table(["target", "pid", "role", "process", "first MiB", "max MiB", "last MiB"], rows)


def soak_section(results: Results) -> list[str]:
    out: list[str] = []
    if not results.get("soak"):
        return [
            "No soak in this run (it needs a running Sluice target; "
            "`--soak-requests 0` disables it).",
            "",
        ]
    for n, s in results["soak"].items():
        out += [
            f"#### {title(n)}",
            "",
            f"{s['requests']:,} requests (target {s['target_requests']:,}) "
            f"at c={s['concurrency']} in {s['duration_s']:.0f} s = {s['rps']:,.0f} req/s, "
            f"{s['errors']:,} errors"
            + ("" if s["complete"] else " — **stopped at the time cap before the target count**"),
            "",
        ]
        rows = [
            [
                str(p["pid"]),
                p["role"],
                ms(p["first_mib"]),
                ms(p["max_mib"]),
                ms(p["last_mib"]),
                ms(p["growth_mib"]),
            ]
            for p in s["rss"]
        ]
        out += table(
            ["pid", "role", "RSS first MiB", "RSS max MiB", "RSS last MiB", "growth MiB"], rows
        )
        slices = s["slices"]
        if slices:
            rps = [x["rps"] for x in slices]
            out += [
                f"Throughput per slice: min {min(rps):,.0f}, max {max(rps):,.0f} req/s; "
                f"p99 per slice: min {ms(min(x['p99_ms'] for x in slices))}, "
                f"max {ms(max(x['p99_ms'] for x in slices))} ms.",
                "",
            ]
    return out


def unavailable_section(results: Results) -> list[str]:
    bad = {n: t for n, t in results["targets"].items() if t.get("status") != "ok"}
    out: list[str] = []
    for n, t in bad.items():
        reason = str(t.get("reason", "")).strip()
        first, _, rest = reason.partition("\n")
        out.append(f"- **{title(n)}** — {t['status']}: {first}")
        if rest.strip():
            out += [
                "",
                "  ```",
                *[f"  {line}" for line in rest.strip().splitlines()[-12:]],
                "  ```",
            ]
    for n, t in results["targets"].items():
        for note in t.get("notes", []) if t.get("status") == "ok" else []:
            if note.startswith("streaming broken"):
                out.append(f"- **{title(n)}** — {note}")
    return (out or ["All requested targets ran."]) + [""]


def targets_section(results: Results) -> list[str]:
    rows = []
    for n, t in results["targets"].items():
        if t.get("status") != "ok":
            rows.append([title(n), t.get("status", "?"), "–", "–", "–", "see below"])
            continue
        db = t.get("db_rows_after_soak") or t.get("db_rows")
        notes = list(t.get("notes", []))
        if db:
            notes.append("DB rows: " + ", ".join(f"{k}={v:,}" for k, v in sorted(db.items())))
        slog = t.get("server_log")
        if slog and slog.get("tracebacks"):
            notes.append(f"server log: {slog['tracebacks']:,} tracebacks ({slog['path']})")
        rows.append(
            [
                title(n),
                "ok",
                str(t.get("workers")),
                t.get("version", "?"),
                "–" if t.get("startup_s") is None else f"{t['startup_s']:.1f}",
                "; ".join(notes).replace("|", "/"),
            ]
        )
    return table(["target", "status", "workers", "version", "startup s", "notes"], rows)


def commands_section(results: Results) -> list[str]:
    meta = results["meta"]
    lines = ["```sh", f"# harness\n{meta['invocation']}"]
    if meta.get("upstream", {}).get("command"):
        lines.append(f"# fake upstream\n{meta['upstream']['command']}")
    for n, t in results["targets"].items():
        if t.get("commands"):
            lines.append(f"# {n}\n" + "\n".join(t["commands"]))
    wrk_cmds = sorted(
        {
            s["command"]
            for t in results["targets"].values()
            for s in t.get("scenarios", {}).values()
            if isinstance(s, dict) and "command" in s
        }
    )
    generic = sorted(
        {c.rsplit(" ", 1)[0] for c in wrk_cmds},
        key=lambda c: int(c.split(" -c", 1)[1].split()[0]) if " -c" in c else 0,
    )
    if generic:
        lines.append("# non-streaming load, per target URL (post.lua below)")
        lines += [f"{c} http://127.0.0.1:PORT/v1/chat/completions" for c in generic]
    lines.append("```")
    lines.append("")
    for n, t in results["targets"].items():
        for path, text in (t.get("config_files") or {}).items():
            lines += [f"`{path}` ({n}):", "", "```yaml", text.rstrip(), "```", ""]
    lua = meta.get("wrk_script_example")
    if lua:
        lines += ["`post.lua` (headers differ per target: key, Portkey's x-portkey-*):", ""]
        lines += ["```lua", lua.rstrip(), "```", ""]
    return lines


def render(results: Results) -> str:
    meta = results["meta"]
    m = meta["machine"]
    v = meta.get("versions", {})
    plan = meta["plan"]
    out = [
        "# Sluice benchmark results",
        "",
        f"Generated by `bench/run.py` ({meta['mode']} mode) — started {meta['started']}, finished "
        f"{meta.get('finished', '?')}. Raw data: [`results.json`](results.json). "
        "Plots: [`latency.png`](latency.png)"
        + (", [`rss.png`](rss.png)." if results.get("soak") else "."),
        "",
        "Every target proxies to the same fake OpenAI upstream (`bench/fake_upstream.py`, one "
        "process, uvloop + httptools) in the same run, one target at a time. *Added* latency = "
        "target minus direct at the same scenario. All processes share the machine's "
        f"{m['nproc']} cores with the load generator and the upstream.",
        "",
        "## Headline",
        "",
        *noise_warning(results),
        *headline(results),
        "## Goals",
        "",
        "The performance issue's targets, judged on this run's figures only (ratios between "
        "targets measured minutes apart on the same machine).",
        "",
        *goals_section(results),
        "## Sluice vs peers (ratios)",
        "",
        "RPS ratio > 1 means Sluice serves more; p50 latency ratio > 1 means the peer is slower.",
        "",
        *ratios(results),
        "## Non-streaming (wrk)",
        "",
        f"`POST /v1/chat/completions`, {plan['json_tokens']}-token completion, "
        f"{plan['json_duration_s']:.0f} s per point, "
        f"after a {plan['warmup_s']:.0f} s warm-up at c=16.",
        "",
        *json_tables(results),
        "## Streaming (aiohttp client)",
        "",
        "`stream: true` with `stream_options.include_usage`, "
        f"{plan['stream_duration_s']:.0f} s per point. TTFT = time to the first SSE `data:` "
        "event; total = time to the end of the stream; "
        "chunks/s counts content-bearing chunks over all streams. The fake upstream sends all "
        f"chunks at once (chunk delay {meta['upstream'].get('chunk_delay_ms', 0)} ms), so this "
        "measures the gateways' own streaming cost.",
        "",
        *stream_tables(results),
        "## Text to speech (aiohttp client)",
        "",
        "`POST /v1/audio/speech` (`tts-1`, WAV): the fake upstream answers one second of audio "
        "(48 KB) in 8 KiB HTTP chunks. TTFB = time to the first byte of the audio; the gateway "
        "relays it as it arrives. Targets without a speech route configured (the peers) are "
        "not measured.",
        "",
        *speech_tables(results),
        "## Memory (RSS per process over the scenarios)",
        "",
        *memory_section(results),
        "## Soak",
        "",
        *soak_section(results),
        "## Targets",
        "",
        *targets_section(results),
        "### Unavailable or degraded",
        "",
        *unavailable_section(results),
        "## Machine",
        "",
        *table(
            ["nproc", "memory", "CPU", "kernel", "OS", "Python", "load avg start → end"],
            [
                [
                    str(m["nproc"]),
                    f"{m['memory_gib']} GiB",
                    m["cpu_model"],
                    m["kernel"],
                    m["os"],
                    m["python"],
                    f"{loadavg(m.get('loadavg_at_start'))} → {loadavg(m.get('loadavg_at_end'))}",
                ]
            ],
        ),
        "## Versions",
        "",
        *table(["component", "version"], [[k, str(x)] for k, x in v.items()]),
        "## Commands",
        "",
        *commands_section(results),
    ]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- plots


def plot_latency(results: Results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    levels = results["meta"]["plan"]["json_levels"]
    fig, (ax_lat, ax_rps) = plt.subplots(1, 2, figsize=(13, 5))
    for i, n in enumerate(ok_targets(results)):
        color = f"C{i}"
        found = [(c, scenario(results, n, f"json_c{c}")) for c in levels]
        pts = [(c, s) for c, s in found if s is not None]
        if not pts:
            continue
        xs = [c for c, _ in pts]
        ax_lat.plot(
            xs, [s["latency_ms"]["p50"] for _, s in pts], "o-", color=color, label=f"{title(n)} p50"
        )
        ax_lat.plot(
            xs,
            [s["latency_ms"]["p99"] for _, s in pts],
            "s--",
            color=color,
            alpha=0.6,
            label=f"{title(n)} p99",
        )
        ax_rps.plot(xs, [s["rps"] for _, s in pts], "o-", color=color, label=title(n))
    for ax in (ax_lat, ax_rps):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent connections (wrk)")
        ax.grid(True, which="both", alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency, ms (log)")
    ax_lat.set_title("Non-streaming latency vs concurrency")
    ax_lat.legend(fontsize=7, ncol=2)
    ax_rps.set_yscale("log")
    ax_rps.set_ylabel("requests/s (log)")
    ax_rps.set_title("Throughput vs concurrency")
    ax_rps.legend(fontsize=8)
    m = results["meta"]["machine"]
    fig.suptitle(f"Sluice benchmark — {m['nproc']} cores, {m['cpu_model']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_rss(results: Results, path: Path) -> bool:
    soaks = results.get("soak") or {}
    if not soaks:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(soaks), figsize=(6.5 * len(soaks), 4.5), squeeze=False)
    for ax, (n, s) in zip(axes[0], soaks.items(), strict=True):
        roles = {str(p["pid"]): p["role"] for p in s["rss"]}
        pids = sorted({pid for pt in s["rss_series"] for pid in pt["rss_mib"]})
        for pid in pids:
            pts = [(pt["t"], pt["rss_mib"][pid]) for pt in s["rss_series"] if pid in pt["rss_mib"]]
            ax.plot(
                [t for t, _ in pts], [r for _, r in pts], label=f"pid {pid} ({roles.get(pid, '?')})"
            )
        ax.set_title(f"{title(n)}: RSS during {s['requests']:,}-request soak", fontsize=10)
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS, MiB")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(results: Results, out_dir: Path) -> list[Path]:
    written = []
    md = out_dir / "RESULTS.md"
    md.write_text(render(results))
    written.append(md)
    if ok_targets(results) and plot_latency(results, out_dir / "latency.png"):
        written.append(out_dir / "latency.png")
    if plot_rss(results, out_dir / "rss.png"):
        written.append(out_dir / "rss.png")
    return written


def main(argv: Sequence[str]) -> int:
    src = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results.json"
    written = write_all(json.loads(src.read_text()), src.parent)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
