"""Channels created, edited and deleted at runtime (admin API, console), next to the YAML ones.

The admin API validates a channel exactly as the config file would (the same tagged union of
provider configs), encrypts its upstream key (sluice.secret_box) and stores it
(storage/channel_store.py), then applies it to this server's router at once. Every server polls
the store's version every ``console.channel_poll_s`` (0.5 s by default: one one-row read, off
the request path) and rebuilds its router when it moved, so every replica serves a change
within a second. Channels of the config file win over a runtime channel of the same name (the
API refuses such a name; one left over from before a reload is skipped) and stay read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from sluice.config_base import Secret
from sluice.errors import InvalidRequest, NotFound, ServiceUnavailable
from sluice.providers.configs import AnyChannelConfig, ChannelConfig
from sluice.secret_box import SecretBox, SecretBoxError
from sluice.storage.channel_store import ChannelStore, StoredChannel
from sluice.validation_errors import split_validation_error

__all__ = ["RuntimeChannels", "parse_channel", "channel_json"]

log = logging.getLogger("sluice")

_READ_TIMEOUT_S = 5.0
_DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


def _decode_secret(kind: type, value: Any) -> Any:
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise TypeError(f"Expected a string, got `{type(value).__name__}`")


def _encode_secret(value: Any) -> Any:
    if isinstance(value, Secret):
        return ""  # dropped below: the key is stored apart, encrypted
    raise TypeError(f"cannot encode {type(value).__name__}")


def parse_channel(raw: object) -> ChannelConfig:
    """A channel from the admin API, checked as the config file checks its channels."""
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object (a channel).")
    try:
        config: ChannelConfig = msgspec.convert(
            raw, AnyChannelConfig, strict=False, dec_hook=_decode_secret
        )
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc)
        param = path or None
        where = f"Invalid '{path}': " if path else "Invalid channel: "
        raise InvalidRequest(where + message, param=param) from None
    if config.capabilities.managed_server:
        raise InvalidRequest(
            f"Channels of type '{config.type}' run a local server: define them in the config file.",
            param="type",
        )
    if config.capabilities.needs_base_url and not config.base_url:
        raise InvalidRequest("A base_url is required for this channel type.", param="base_url")
    return config


def channel_json(config: ChannelConfig) -> str:
    """The channel as stored: every field but the upstream key."""
    data = msgspec.to_builtins(config, enc_hook=_encode_secret)
    assert isinstance(data, dict)
    data.pop("api_key", None)
    return msgspec.json.encode(data).decode()


def channel_fields(config: ChannelConfig) -> dict[str, Any]:
    """The channel's fields for an edit form or a merge (never the upstream key)."""
    data = msgspec.to_builtins(config, enc_hook=_encode_secret)
    assert isinstance(data, dict)
    data.pop("api_key", None)
    return data


class RuntimeChannels:
    """The store, the secret box (made when first needed), and the watcher of the version."""

    def __init__(
        self,
        store: ChannelStore,
        box: Callable[[], SecretBox],
        apply: Callable[[list[ChannelConfig]], None],
        reserved_names: Callable[[], set[str]],
        interval_s: float,
    ) -> None:
        self.store = store
        self._make_box = box
        self._box: SecretBox | None = None
        self._apply = apply
        self._reserved = reserved_names
        self._interval_s = interval_s
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failing = False
        self.configs: dict[str, ChannelConfig] = {}

    def box(self) -> SecretBox:
        if self._box is None:
            try:
                self._box = self._make_box()
            except OSError as exc:  # the generated key file cannot be written or read
                raise SecretBoxError(
                    f"the secrets key file is not usable: {exc.strerror}"
                ) from None
        return self._box

    def _sealing_box(self) -> SecretBox:
        """The box for a change the admin asked for: unusable, it is a 503, not a 500."""
        try:
            return self.box()
        except SecretBoxError as exc:
            raise ServiceUnavailable(
                f"Runtime channels cannot be stored: {exc} (set secrets_key or "
                "SLUICE_SECRETS_KEY).",
                code="secrets_key_unavailable",
            ) from None

    # --- changes (admin API, console) ---

    async def create(self, raw: object) -> ChannelConfig:
        config = parse_channel(raw)
        self._check_name_free(config.name)
        encrypted = self._sealing_box().encrypt(config.api_key.get_secret_value())
        if not await self.store.create(config.name, channel_json(config), encrypted):
            raise InvalidRequest(
                f"A channel named '{config.name}' exists already.",
                param="name",
                code="channel_exists",
            )
        await self.refresh()
        return config

    async def update(self, name: str, raw: object) -> ChannelConfig:
        """Absent fields stay as they were; an absent or empty api_key keeps the stored one."""
        stored = await self._stored_or_404(name)
        if not isinstance(raw, dict):
            raise InvalidRequest("The request body must be a JSON object (channel fields).")
        if "name" in raw and raw["name"] != name:
            raise InvalidRequest("A channel cannot be renamed; create a new one.", param="name")
        merged = {**msgspec.json.decode(stored.config), **raw, "name": name}
        new_key = raw.get("api_key")
        if not new_key:
            try:
                merged["api_key"] = self._sealing_box().decrypt(stored.api_key_enc)
            except SecretBoxError as exc:
                raise InvalidRequest(
                    f"The stored upstream key cannot be read ({exc}); send a new api_key.",
                    param="api_key",
                ) from None
        config = parse_channel(merged)
        encrypted = (
            self._sealing_box().encrypt(config.api_key.get_secret_value())
            if new_key
            else stored.api_key_enc
        )
        if not await self.store.update(name, channel_json(config), encrypted):
            raise NotFound(f"No runtime channel named '{name}'.", code="channel_not_found")
        await self.refresh()
        return config

    async def delete(self, name: str) -> None:
        if not await self.store.delete(name):
            raise NotFound(f"No runtime channel named '{name}'.", code="channel_not_found")
        await self.refresh()

    async def _stored_or_404(self, name: str) -> StoredChannel:
        stored = await self.store.get(name)
        if stored is None:
            if name in self._reserved():
                raise InvalidRequest(
                    f"Channel '{name}' is defined in the config file and is read-only here.",
                    code="channel_read_only",
                )
            raise NotFound(f"No runtime channel named '{name}'.", code="channel_not_found")
        return stored

    def _check_name_free(self, name: str) -> None:
        if name in self._reserved():
            raise InvalidRequest(
                f"The config file defines a channel named '{name}'.",
                param="name",
                code="channel_exists",
            )

    # --- reading and applying ---

    def _decoded(self, stored: StoredChannel) -> ChannelConfig | None:
        try:
            raw = msgspec.json.decode(stored.config)
            raw["api_key"] = self.box().decrypt(stored.api_key_enc)
            return parse_channel(raw)
        except (SecretBoxError, InvalidRequest, msgspec.DecodeError) as exc:
            log.error("runtime channel %s skipped: %s", stored.name, exc)
            return None

    async def refresh(self) -> None:
        """Read every runtime channel and rebuild the router with them."""
        async with asyncio.timeout(_READ_TIMEOUT_S):
            version = await self.store.version()
            rows = await self.store.list()
        configs = [c for c in (self._decoded(r) for r in rows) if c is not None]
        self.configs = {c.name: c for c in configs}
        self._seen = version
        self._apply(configs)

    async def start(self) -> None:
        """Load what is stored before serving, then poll in the background."""
        with contextlib.suppress(*_DB_ERRORS):
            await self.refresh()
        self._task = asyncio.create_task(self._run(), name="runtime-channel-watch")

    async def close(self) -> None:
        """Stop between polls (never cancelled mid-read; see key_watch.py)."""
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None

    async def poll(self) -> bool:
        """Rebuild when the version moved; True if it did."""
        async with asyncio.timeout(_READ_TIMEOUT_S):
            version = await self.store.version()
        if version == self._seen:
            return False
        await self.refresh()
        return True

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                await self.poll()
            except _DB_ERRORS as exc:
                if not self._failing:
                    log.warning("runtime channel poll failed: %s", type(exc).__name__)
                self._failing = True
            else:
                self._failing = False
