"""The things under test: the fake upstream itself, Sluice, LiteLLM proxy, Portkey gateway.

Each ``*_target`` function installs what it needs (peers only), starts the server on a free
loopback port, waits until it is ready and returns a :class:`Target`; on any problem it
raises :class:`procs.Unavailable` with a reason fit for the results table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import (
    ManagedProcess,
    Unavailable,
    free_port,
    http_get,
    port_open,
    run_logged,
    wait_ready,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MODEL = "gpt-4o-mini"
SPEECH_MODEL = "tts-1"  # the TTS time-to-first-byte scenario's model
UPSTREAM_KEY = "sk-upstream-secret"

LITELLM_VERSION = "1.106.2"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
LITELLM_MASTER_KEY = "sk-litellm-bench-master"

PORTKEY_VERSION = "1.15.2"
PORTKEY_DIR = BENCH_DIR / "node_modules" / "@portkey-ai" / "gateway"

SLUICE_ADMIN_KEY = "sk-admin-bench-0123456789abcdef0123456789"
PG_HOST, PG_PORT, PG_DATABASE = "127.0.0.1", 5432, "sluice_bench"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13


@dataclass
class Context:
    run_dir: Path
    upstream: str = ""
    workers: int = 2
    install_timeout_s: float = 1500.0
    python: str = sys.executable
    sluice_src: Path | None = None  # snapshot of src/ that every Sluice variant imports
    sluice_version: str | None = None

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"


@dataclass
class Target:
    name: str
    kind: str
    base_url: str
    headers: dict[str, str]
    workers: int | None
    version: str
    process: ManagedProcess | None = None
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    db: dict[str, str] | None = None
    startup_s: float | None = None
    config: dict[str, str] = field(default_factory=dict)
    services: frozenset[str] = frozenset()  # names of the server processes it relies on

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def speech_url(self) -> str:
        return f"{self.base_url}/audio/speech"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.chat_url,
            "workers": self.workers,
            "version": self.version,
            "notes": self.notes,
            "commands": self.commands,
            "startup_s": None if self.startup_s is None else round(self.startup_s, 2),
            "request_headers": sorted(self.headers),
            "config_files": self.config,
        }


def _cmd(argv: list[Any], env: dict[str, str] | None = None) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return (prefix + " " if prefix else "") + shlex.join(str(a) for a in argv)


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO_ROOT))
    return str(path)


# --------------------------------------------------------------------------- upstream


def start_upstream(
    ctx: Context, chunks: int = 16, latency_ms: float = 0.0, chunk_delay_ms: float = 0.0
) -> tuple[ManagedProcess, str, str]:
    """Start the fake upstream; return (process, base URL without /v1, command line)."""
    port = free_port()
    argv: list[Any] = [
        ctx.python,
        BENCH_DIR / "fake_upstream.py",
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--api-key",
        UPSTREAM_KEY,
        "--chunks",
        chunks,
        "--latency-ms",
        latency_ms,
        "--chunk-delay-ms",
        chunk_delay_ms,
    ]
    proc = ManagedProcess("fake-upstream", argv, ctx.logs / "fake_upstream.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{url}/health", 20)
    ctx.upstream = url
    return (
        proc,
        url,
        _cmd([_rel(Path(ctx.python)), _rel(BENCH_DIR / "fake_upstream.py"), *argv[2:]]),
    )


def upstream_stats(upstream: str) -> dict[str, Any]:
    status, body = http_get(f"{upstream}/bench/stats")
    return json.loads(body) if status == 200 else {}


def direct_target(ctx: Context) -> Target:
    return Target(
        name="direct",
        kind="direct",
        base_url=f"{ctx.upstream}/v1",
        headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
        workers=1,
        version="bench/fake_upstream.py",
        notes=["no gateway: the client talks to the fake upstream itself (the baseline)"],
    )


def bare_proxy_target(ctx: Context) -> Target:
    """The floor: uvicorn + aiohttp forwarding with no logic (``bench/bare_proxy.py``)."""
    port = free_port()
    script = BENCH_DIR / "bare_proxy.py"
    argv: list[Any] = [ctx.python, script, "--upstream", ctx.upstream, "--port", port]
    argv += ["--workers", ctx.workers]
    log = ctx.logs / "bare-proxy.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # uvicorn's workers import bench.*
    proc = ManagedProcess("bare-proxy", argv, log, env=env, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    startup = wait_ready(proc, f"{base}/health", 60)
    return Target(
        name="bare-proxy",
        kind="floor",
        base_url=f"{base}/v1",
        headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
        workers=ctx.workers,
        version="bench/bare_proxy.py",
        process=proc,
        notes=[
            "reference, not a gateway: uvicorn + one aiohttp session per worker forwarding "
            "bytes, with no auth, limits, metering or translation (the stack's own cost)"
        ],
        commands=[_cmd([_rel(Path(ctx.python)), _rel(script), *map(str, argv[2:])])],
        startup_s=startup,
    )


# --------------------------------------------------------------------------- Sluice


def sluice_cli() -> Path | None:
    """The ``sluice`` console script next to the running interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "sluice"
    if beside.exists():
        return beside
    found = shutil.which("sluice")
    return Path(found) if found else None


def sluice_version() -> str:
    try:
        from importlib.metadata import version

        ver = version("sluice")
    except Exception:  # PackageNotFoundError and broken metadata alike
        ver = "unknown"
    git = ["git", "-C", str(REPO_ROOT)]
    try:
        rev = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = dirty = ""
    return f"{ver} ({rev or 'no commit'}{' + uncommitted changes' if dirty else ''})"


def snapshot_sluice(ctx: Context) -> str | None:
    """Copy src/sluice into the run directory; Sluice targets then import that copy.

    The tree may change while a long run is going on (it is being developed), and every
    Sluice variant must run the same code: the one the run started with.
    """
    src = REPO_ROOT / "src" / "sluice"
    if not src.is_dir() or sluice_cli() is None:
        return None
    dest = ctx.run_dir / "sluice-src"
    shutil.copytree(src, dest / "sluice", ignore=shutil.ignore_patterns("__pycache__"))
    ctx.sluice_src = dest
    ctx.sluice_version = sluice_version()
    return ctx.sluice_version


def _resp(*parts: str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        raw = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def flush_redis_db(db: int = REDIS_DB) -> None:
    """FLUSHDB on the bench's own Redis database (speaks RESP directly: no client needed)."""
    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=3) as sock:
        sock.sendall(_resp("SELECT", str(db)) + _resp("FLUSHDB"))
        data = b""
        for _ in range(50):
            if data.count(b"\r\n") >= 2:
                break
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"+OK\r\n+OK"):
        raise Unavailable(f"could not flush Redis db {db}: {data[:200]!r}")


def recreate_pg_database(name: str = PG_DATABASE) -> str:
    """Drop and create the bench's own database; return its URL."""
    try:
        import asyncpg
    except ImportError as exc:
        raise Unavailable("asyncpg is not installed in the harness venv") from exc

    async def go() -> None:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="root", database="postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(go())
    except Exception as exc:
        raise Unavailable(f"could not (re)create PostgreSQL database {name}: {exc}") from exc
    return f"postgresql://root@{PG_HOST}:{PG_PORT}/{name}"


def _yaml_scalar(value: Any) -> str:
    return "null" if value is None else json.dumps(value)


def sluice_config(database_url: str, redis_url: str | None, upstream: str) -> str:
    return "\n".join(
        [
            "# Written by bench/targets.py for one benchmark run.",
            f"database_url: {_yaml_scalar(database_url)}",
            f"redis_url: {_yaml_scalar(redis_url)}",
            f"admin_key: {_yaml_scalar(SLUICE_ADMIN_KEY)}",
            "channels:",
            "  - name: fake",
            "    type: openai-compatible",
            f"    base_url: {_yaml_scalar(upstream + '/v1')}",
            f"    api_key: {_yaml_scalar(UPSTREAM_KEY)}",
            f"    models: [{_yaml_scalar(MODEL)}, {_yaml_scalar(SPEECH_MODEL)}]",
            "",
        ]
    )


def parse_key(stdout: str) -> str:
    """The ``key`` field of the JSON object printed by ``sluice keys create --json``."""
    candidates = [stdout.strip(), *reversed(stdout.strip().splitlines())]
    for text in candidates:
        with contextlib.suppress(ValueError):
            obj = json.loads(text)
            if isinstance(obj, dict) and isinstance(obj.get("key"), str):
                return str(obj["key"])
    raise Unavailable(
        f"`sluice keys create --json` printed no JSON object with a 'key': {stdout[:300]!r}"
    )


def sluice_target(
    ctx: Context, variant: str, workers: int | None = None, use_redis: bool = True
) -> Target:
    """Sluice with a real key (budget, rpm and tpm limits) on SQLite or PostgreSQL+Redis.

    SQLite uses Redis too when it is reachable (Sluice needs it for more than one worker);
    ``use_redis=False`` keeps the SQLite variant self-contained (one worker).
    """
    cli = sluice_cli()
    if cli is None:
        raise Unavailable(
            "`sluice` CLI not found next to the running Python (expected .venv/bin/sluice; "
            "install the project into the venv: pip install -e .)"
        )
    name = f"sluice-{variant}"
    notes: list[str] = []
    redis_ok = port_open(REDIS_HOST, REDIS_PORT) and (use_redis or variant == "pg")
    db: dict[str, str]
    if variant == "pg":
        if not (port_open(PG_HOST, PG_PORT) and redis_ok):
            raise Unavailable("needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379")
        database_url = recreate_pg_database()
        db = {"kind": "pg", "database": PG_DATABASE}
    elif variant == "sqlite":
        db_path = ctx.run_dir / "sluice-bench.db"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        database_url = f"sqlite:///{db_path}"
        db = {"kind": "sqlite", "path": str(db_path)}
    else:
        raise ValueError(f"unknown Sluice variant {variant!r}")
    redis_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}" if redis_ok else None
    if redis_url is not None:
        flush_redis_db()
    want = workers if workers is not None else ctx.workers
    n_workers = want if redis_url is not None else 1
    if n_workers < want:
        notes.append("no Redis: 1 worker (Sluice needs redis_url for workers > 1)")
    notes.append(f"database: {database_url.split('://')[0]}, redis: {'yes' if redis_url else 'no'}")

    config = ctx.run_dir / f"{name}.yaml"
    config_text = sluice_config(database_url, redis_url, ctx.upstream)
    config.write_text(config_text)
    env = {**os.environ, "SLUICE_CONFIG": str(config)}
    if ctx.sluice_src is not None:  # PYTHONPATH comes before the editable install's .pth
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ctx.sluice_src), env.get("PYTHONPATH")])
        )
        notes.append(f"code: snapshot of src/sluice taken at run start ({_rel(ctx.sluice_src)})")
    log = ctx.logs / f"{name}.log"
    commands: list[str] = []

    migrate = [cli, "migrate"]
    commands.append(_cmd([_rel(cli), "migrate"], {"SLUICE_CONFIG": _rel(config)}))
    mig = run_logged(migrate, log, 180, env=env, cwd=REPO_ROOT)
    if mig.returncode != 0:
        notes.append(f"`sluice migrate` exited {mig.returncode} (continuing)")

    key_args: list[object] = ["keys", "create", "--name", "bench", "--budget-usd", "1000000"]
    key_args += ["--rpm", "100000000", "--tpm", "1000000000", "--json"]
    commands.append(_cmd([_rel(cli), *key_args], {"SLUICE_CONFIG": _rel(config)}))
    made = run_logged([cli, *key_args], log, 120, env=env, cwd=REPO_ROOT)
    if made.returncode != 0:
        detail = (made.stderr or made.stdout).strip()[-600:]
        raise Unavailable(f"`sluice keys create` exited {made.returncode}: {detail}")
    key = parse_key(made.stdout)

    port = free_port()
    serve: list[Any] = [cli, "serve", "--config", config, "--host", "127.0.0.1", "--port", port]
    serve += ["--workers", n_workers]
    commands.append(_cmd([_rel(cli), "serve", "--config", _rel(config), *serve[4:]]))
    proc = ManagedProcess(name, serve, log, env=env, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    startup = wait_ready(proc, f"{base}/readyz", 120)
    return Target(
        name=name,
        kind="sluice",
        base_url=f"{base}/v1",
        headers={"Authorization": f"Bearer {key}"},
        workers=n_workers,
        version=ctx.sluice_version or sluice_version(),
        process=proc,
        notes=notes,
        commands=commands,
        db=db,
        startup_s=startup,
        config={_rel(config): config_text},
        services=frozenset(
            (["postgres"] if variant == "pg" else []) + (["redis-server"] if redis_url else [])
        ),
    )


def table_counts(db: dict[str, str]) -> dict[str, int]:
    """Row count of every table in Sluice's database (to show usage rows were written)."""
    if db["kind"] == "sqlite":
        conn = sqlite3.connect(f"file:{db['path']}?mode=ro", uri=True, timeout=10)
        try:
            names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            return {
                n: int(conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names
            }
        finally:
            conn.close()
    import asyncpg

    async def go() -> dict[str, int]:
        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user="root", database=db["database"]
        )
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            out: dict[str, int] = {}
            for r in rows:
                out[r["tablename"]] = int(
                    await conn.fetchval(f'SELECT count(*) FROM "{r["tablename"]}"')
                )
            return out
        finally:
            await conn.close()

    return asyncio.run(go())


# --------------------------------------------------------------------------- LiteLLM


def installed_litellm_version() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    try:
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def ensure_litellm(ctx: Context) -> Path:
    """``litellm[proxy]==LITELLM_VERSION`` in its own venv (bench/.venv-litellm)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if installed_litellm_version() == LITELLM_VERSION and exe.exists():
        return exe
    log = ctx.logs / "litellm-install.log"
    print(
        f"  installing litellm[proxy]=={LITELLM_VERSION} into {_rel(LITELLM_VENV)} ...", flush=True
    )
    try:
        if not (LITELLM_VENV / "bin" / "python").exists():
            made = run_logged([ctx.python, "-m", "venv", LITELLM_VENV], log, 300)
            if made.returncode != 0:
                raise Unavailable(f"could not create {_rel(LITELLM_VENV)}: {made.stderr[-400:]}")
        pip: list[object] = [LITELLM_VENV / "bin" / "python", "-m", "pip", "install", "-q"]
        done = run_logged([*pip, f"litellm[proxy]=={LITELLM_VERSION}"], log, ctx.install_timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"installing litellm timed out after {exc.timeout:.0f}s") from exc
    if done.returncode != 0:
        raise Unavailable(
            f"pip install litellm[proxy]=={LITELLM_VERSION} failed: {done.stderr[-600:]}"
        )
    if installed_litellm_version() != LITELLM_VERSION or not exe.exists():
        raise Unavailable(
            f"litellm {LITELLM_VERSION} not importable after install (see {_rel(log)})"
        )
    return exe


def litellm_config(upstream: str) -> str:
    return "\n".join(
        [
            "# Written by bench/targets.py: one model, no database, master key only.",
            "model_list:",
            f"  - model_name: {MODEL}",
            "    litellm_params:",
            f"      model: openai/{MODEL}",
            f"      api_base: {_yaml_scalar(upstream + '/v1')}",
            f"      api_key: {_yaml_scalar(UPSTREAM_KEY)}",
            "general_settings:",
            f"  master_key: {_yaml_scalar(LITELLM_MASTER_KEY)}",
            "",
        ]
    )


def litellm_target(ctx: Context) -> Target:
    exe = ensure_litellm(ctx)
    config = ctx.run_dir / "litellm.yaml"
    config_text = litellm_config(ctx.upstream)
    config.write_text(config_text)
    extra_env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | extra_env
    port = free_port()
    argv: list[Any] = [exe, "--config", config, "--host", "127.0.0.1", "--port", port]
    argv += ["--num_workers", ctx.workers]
    proc = ManagedProcess("litellm", argv, ctx.logs / "litellm.log", env=env, cwd=ctx.run_dir)
    base = f"http://127.0.0.1:{port}"
    startup = wait_ready(proc, f"{base}/health/readiness", 300)
    return Target(
        name="litellm",
        kind="litellm",
        base_url=f"{base}/v1",
        headers={"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
        workers=ctx.workers,
        version=f"litellm[proxy]=={LITELLM_VERSION}",
        process=proc,
        notes=["master key, no database (no spend logs / key limits)", "default logging"],
        commands=[_cmd([_rel(exe), "--config", _rel(config), *argv[3:]], extra_env)],
        startup_s=startup,
        config={_rel(config): config_text},
    )


# --------------------------------------------------------------------------- Portkey


def _package_version(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def hono_node_server_version() -> str | None:
    return _package_version(BENCH_DIR / "node_modules" / "@hono" / "node-server" / "package.json")


def ensure_portkey(ctx: Context) -> Path:
    """``@portkey-ai/gateway@PORTKEY_VERSION`` from bench/package.json + package-lock.json."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        raise Unavailable("node/npm not installed")
    script = PORTKEY_DIR / "build" / "start-server.js"
    overrides = json.loads((BENCH_DIR / "package.json").read_text()).get("overrides", {})
    want_hono = overrides.get("@hono/node-server")
    hono_ok = want_hono is None or hono_node_server_version() == want_hono
    if (
        _package_version(PORTKEY_DIR / "package.json") == PORTKEY_VERSION
        and hono_ok
        and script.exists()
    ):
        return script
    log = ctx.logs / "portkey-install.log"
    print(f"  installing @portkey-ai/gateway@{PORTKEY_VERSION} with npm ci ...", flush=True)
    try:
        done = run_logged(
            [npm, "ci", "--no-audit", "--no-fund"], log, ctx.install_timeout_s, cwd=BENCH_DIR
        )
        if done.returncode != 0:
            done = run_logged(
                [npm, "install", "--no-audit", "--no-fund"],
                log,
                ctx.install_timeout_s,
                cwd=BENCH_DIR,
            )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"npm install timed out after {exc.timeout:.0f}s") from exc
    if done.returncode != 0 or not script.exists():
        raise Unavailable(
            f"npm install of @portkey-ai/gateway failed: {(done.stderr or done.stdout)[-600:]}"
        )
    return script


def node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def portkey_target(ctx: Context) -> Target:
    script = ensure_portkey(ctx)
    node = shutil.which("node") or "node"
    port = free_port()
    argv: list[Any] = [node, script, f"--port={port}", "--headless"]
    extra_env = {"NODE_ENV": "production"}
    env = dict(os.environ) | extra_env
    proc = ManagedProcess("portkey", argv, ctx.logs / "portkey.log", env=env, cwd=BENCH_DIR)
    base = f"http://127.0.0.1:{port}"
    startup = wait_ready(proc, f"{base}/", 90)
    return Target(
        name="portkey",
        kind="portkey",
        base_url=f"{base}/v1",
        headers={
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"{ctx.upstream}/v1",
            "Authorization": f"Bearer {UPSTREAM_KEY}",
        },
        workers=1,
        version=f"@portkey-ai/gateway@{PORTKEY_VERSION} (node {node_version()})",
        process=proc,
        notes=[
            "one Node.js process: the gateway's start-server has no worker/cluster option",
            f"npm override @hono/node-server@{hono_node_server_version()}: with 1.14+ "
            "streaming fails ('TypeError: immutable' appending headers to the fetched response)",
        ],
        commands=[_cmd(["node", _rel(script), *argv[2:]], extra_env)],
        startup_s=startup,
    )
