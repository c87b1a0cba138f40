"""The upstream servers ``sluice serve`` starts itself: one child process per channel whose
config type declares a kind of managed server (``capabilities.managed_server``).

Each kind has its launcher here, keyed by that kind, so a new managed upstream is a launcher
and a config type declaring it; nothing here asks for a channel's type. The base URLs go to the
workers (``app.ENV_LOCAL_ENDPOINTS``), where routing sends the channel's requests to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from sluice.local_audio.asr import transcription_available
from sluice.local_audio.child import LocalAudioServer
from sluice.local_audio.tts import speech_available
from sluice.local_model import LocalModelServer, smollm2_model_path
from sluice.providers.configs import LocalAudioConfig, LocalConfig, ManagedServer
from sluice.settings import LOCAL_MODEL_NAME, Settings

__all__ = ["ManagedChild", "start_managed_servers"]


class ManagedChild(Protocol):
    def start(self) -> str: ...  # its base URL, once it answers

    def stop(self) -> None: ...


def _llama_cpp(channel: LocalConfig) -> ManagedChild | None:
    model_path = Path(channel.model_path) if channel.model_path else smollm2_model_path()
    if model_path is None or not model_path.is_file():
        print(f"sluice: channel {channel.name}: no local model file; channel disabled")
        return None
    alias = channel.models[0] if channel.models else LOCAL_MODEL_NAME
    print(f"sluice: starting local model {alias} for channel {channel.name} …", flush=True)
    return LocalModelServer(
        model_path=model_path,
        model_alias=channel.upstream_model(alias),
        port=channel.port or 0,
        context_size=channel.context_size,
    )


def _local_audio(channel: LocalAudioConfig) -> ManagedChild | None:
    if not (speech_available() or transcription_available()):
        print(f"sluice: channel {channel.name}: no local audio engine installed "
              "(pip install 'sluice[local]'); channel disabled")  # fmt: skip
        return None
    print(f"sluice: starting local audio server for channel {channel.name} …", flush=True)
    return LocalAudioServer(port=channel.port or 0, threads=channel.threads)


# Each launcher takes the config type that declares its kind (typed as such; the table is Any
# because a mapping cannot tie each key to its function's parameter type).
_LAUNCHERS: Mapping[ManagedServer, Callable[[Any], ManagedChild | None]] = {
    "llama.cpp": _llama_cpp,
    "local-audio": _local_audio,
}


def start_managed_servers(settings: Settings) -> tuple[dict[str, str], list[ManagedChild]]:
    """Start the server of every enabled channel that needs one: (channel name -> base URL,
    the started servers, to stop when the gateway stops). A server that cannot start leaves
    its channel out, with the reason printed, and the gateway starts without it."""
    endpoints: dict[str, str] = {}
    servers: list[ManagedChild] = []
    for channel in settings.channels:
        kind = channel.capabilities.managed_server
        if kind is None or not channel.enabled:
            continue
        server = _LAUNCHERS[kind](channel)
        if server is None:
            continue
        try:
            endpoints[channel.name] = server.start()
        except RuntimeError as exc:
            print(f"sluice: channel {channel.name}: {exc}; channel disabled", flush=True)
            server.stop()
            continue
        servers.append(server)
    return endpoints, servers
