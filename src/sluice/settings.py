"""Configuration: a YAML file with ``${ENV}`` interpolation, validated once and passed explicitly.

The path comes from ``--config`` or ``SLUICE_CONFIG``; with neither, the embedded default is used
(SQLite under ``./.sluice/``, in-process limits, and the local SmolLM2 channel when installed).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

__all__ = [
    "ChannelConfig",
    "CircuitConfig",
    "ConfigError",
    "Settings",
    "load_settings",
    "parse_settings",
    "resolve_config_path",
    "DEFAULT_DATABASE_URL",
    "LOCAL_MODEL_NAME",
]

DEFAULT_DATABASE_URL = "sqlite:///./.sluice/sluice.db"
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
ChannelType = Literal["openai", "openai-compatible", "local", "azure", "anthropic", "gemini"]
DEFAULT_RETRY_STATUSES = [408, 409, 429, 500, 502, 503, 504, 529]
NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 422})

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(_Strict):
    """USD per one million tokens."""

    input: float = Field(ge=0)
    output: float = Field(default=0.0, ge=0)
    cached_input: float | None = Field(default=None, ge=0)


class PricingConfig(_Strict):
    unpriced_policy: Literal["reject", "free"] = "reject"
    overrides: dict[str, ModelPrice] = Field(default_factory=dict)


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # Reservation when the client sends no max_tokens: the most we expect a reply to cost.
    default_max_tokens: int = Field(default=4096, gt=0)
    key_cache_ttl_s: float = Field(default=5.0, ge=0)
    max_json_depth: int = Field(default=64, gt=0)


class TimeoutsConfig(_Strict):
    connect_s: float = Field(default=10.0, gt=0)
    first_byte_s: float = Field(default=120.0, gt=0)
    idle_s: float = Field(default=120.0, gt=0)
    total_s: float = Field(default=900.0, gt=0)


class RetryConfig(_Strict):
    max_attempts: int = Field(default=3, ge=1)
    deadline_s: float = Field(default=120.0, gt=0)
    retry_on_status: list[int] = Field(default_factory=lambda: list(DEFAULT_RETRY_STATUSES))
    max_retry_after_s: float = Field(default=10.0, ge=0)

    @field_validator("retry_on_status")
    @classmethod
    def _no_client_statuses(cls, statuses: list[int]) -> list[int]:
        # Retrying the client's own mistake elsewhere only multiplies it.
        bad = sorted(set(statuses) & NEVER_RETRY_STATUSES)
        if bad:
            raise ValueError(f"statuses {bad} are the client's fault and are never retried")
        return statuses


class CircuitConfig(_Strict):
    """Per channel and per channel+model circuit breakers (see docs/reliability.md)."""

    consecutive_failures: int = Field(default=5, ge=1)
    error_rate: float = Field(default=0.5, gt=0, le=1)
    window_s: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=20, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    # Disabled channels (dead upstream key / no credit) are probed this often; 0 = never.
    probe_interval_s: float = Field(default=300.0, ge=0)


class UsageConfig(_Strict):
    batch_interval_ms: int = Field(default=50, gt=0)
    batch_max_rows: int = Field(default=500, gt=0)
    buffer_max_rows: int = Field(default=100_000, gt=0)


class ChannelConfig(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")]
    type: ChannelType
    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    models: list[str] = Field(default_factory=list)
    model_map: dict[str, str] = Field(default_factory=dict)
    priority: int = 0
    weight: int = Field(default=1, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)  # total; overrides timeouts.total_s
    connect_timeout_s: float | None = Field(default=None, gt=0)
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    idle_timeout_s: float | None = Field(default=None, gt=0)
    enabled: bool = True
    # Whether the upstream honours stream_options.include_usage (llama.cpp's server does not).
    stream_usage: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    api_version: str | None = None  # azure
    allow_private_image_urls: bool = False  # anthropic / gemini image fetching
    safety_settings: list[dict[str, Any]] = Field(default_factory=list)  # gemini
    model_path: str | None = None  # local
    port: int | None = None  # local: port of the managed llama.cpp server
    context_size: int = Field(default=2048, gt=0)  # local

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def serves(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models) or (
            model in self.model_map
        )

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)


class CorsConfig(_Strict):
    allow_origins: list[str] = Field(default_factory=lambda: ["*"])
    max_age_s: int = 600


class Settings(_Strict):
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    admin_key: SecretStr | None = None
    # When Redis is down: "open" keeps serving with per-replica limits, "closed" rejects.
    redis_failure_policy: Literal["open", "closed"] = "open"
    log_level: str = "info"
    log_bodies: bool = False
    cors: CorsConfig = Field(default_factory=CorsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # Idle client connections are kept this long. Longer than clients' own idle limits (httpx
    # 5 s, aiohttp 15 s, most load balancers 60 s), so the client always closes first and
    # never sends a request on a connection the server is closing at that very moment.
    keep_alive_s: float = Field(default=75.0, gt=0)
    channels: list[ChannelConfig] = Field(default_factory=list)
    source_path: str | None = None

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, channels: list[ChannelConfig]) -> list[ChannelConfig]:
        names = [c.name for c in channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate channel names: {', '.join(duplicates)}")
        return channels


def _interpolate(value: Any) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set (referenced as ${{{name}}})")

        return _ENV_PATTERN.sub(replace, value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {where}: {err['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def parse_settings(raw: Any, source_path: str | None = None) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a YAML mapping at the top level")
    data = _interpolate(raw)
    if source_path is not None:
        data["source_path"] = source_path
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def resolve_config_path(explicit: str | None) -> Path | None:
    chosen = explicit or os.environ.get("SLUICE_CONFIG") or None
    return Path(chosen) if chosen else None


def load_settings(path: Path | None) -> Settings:
    """Load the config file at ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        return default_settings()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return parse_settings(raw, source_path=str(path.resolve()))


def default_settings() -> Settings:
    """The embedded default: SQLite, in-process limits, local model channel when installed."""
    channels: list[dict[str, Any]] = []
    from sluice.local_model import local_model_available  # local import: optional extra

    if local_model_available():
        channels.append(
            {
                "name": "local",
                "type": "local",
                "models": [LOCAL_MODEL_NAME],
                "stream_usage": False,
            }
        )
    return parse_settings(
        {
            "channels": channels,
            "pricing": {"overrides": {LOCAL_MODEL_NAME: {"input": 0.0, "output": 0.0}}},
        }
    )
