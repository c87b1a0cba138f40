"""Configuration: a YAML file with ``${ENV}`` interpolation, validated once and passed explicitly.

The path comes from ``--config`` or ``SLUICE_CONFIG``; with neither, the embedded default is used
(SQLite under ``./.sluice/``, in-process limits, and the local SmolLM2 channel when installed).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from sluice.config_base import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Secret,
)
from sluice.config_base import Strict as _Strict
from sluice.providers.configs import (
    CHANNEL_CONFIGS,
    AnyChannelConfig,
    ChannelConfig,
    owners_of_field,
    type_name,
)
from sluice.tasks.config import TasksConfig
from sluice.validation_errors import split_validation_error

__all__ = [
    "ChannelConfig",
    "CircuitConfig",
    "ConfigError",
    "ImageFetchConfig",
    "Secret",
    "Settings",
    "load_settings",
    "parse_settings",
    "resolve_config_path",
    "ADMIN_KEY_MIN_LENGTH",
    "DEFAULT_DATABASE_URL",
    "LOCAL_MODEL_NAME",
]

DEFAULT_DATABASE_URL = "sqlite:///./.sluice/sluice.db"
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_RETRY_STATUSES = [408, 409, 429, 500, 502, 503, 504, 529]
NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 422})

# An admin key opens every tenant's keys and usage: shorter than this is a configuration error.
ADMIN_KEY_MIN_LENGTH = 32

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


def _decode_secret(kind: type, value: Any) -> Any:
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise TypeError(f"Expected a string, got `{type(value).__name__}`")


class ModelPrice(_Strict, frozen=True):
    """USD per one million tokens, and per unit of the other metered units (docs/config.md)."""

    input: NonNegativeFloat | None = None  # required unless a per-unit price is given
    output: NonNegativeFloat = 0.0
    cached_input: NonNegativeFloat | None = None
    cache_write: NonNegativeFloat | None = None
    image_input: NonNegativeFloat | None = None  # image input tokens (gpt-image); default: input
    # "SIZE/QUALITY" (e.g. "1024x1024/hd") or "SIZE" -> USD per image
    per_image: dict[Annotated[str, msgspec.Meta(min_length=1)], NonNegativeFloat] = msgspec.field(
        default_factory=dict
    )
    per_audio_second: NonNegativeFloat | None = None
    per_1m_characters: NonNegativeFloat | None = None
    per_search_unit: NonNegativeFloat | None = None
    per_call: NonNegativeFloat | None = None
    per_video_second: NonNegativeFloat | None = None

    def __post_init__(self) -> None:
        units = (
            self.per_audio_second,
            self.per_1m_characters,
            self.per_search_unit,
            self.per_call,
            self.per_video_second,
        )
        if self.input is None and not self.per_image and all(u is None for u in units):
            raise ValueError(
                "a price needs input (USD per 1M tokens) or a per-unit price "
                "(per_image, per_audio_second, per_1m_characters, per_search_unit, per_call, "
                "per_video_second)"
            )


class PricingConfig(_Strict, frozen=True):
    unpriced_policy: Literal["reject", "free"] = "reject"
    overrides: dict[str, ModelPrice] = msgspec.field(default_factory=dict)


class LimitsConfig(_Strict, frozen=True):
    max_body_bytes: PositiveInt = 8 * 1024 * 1024  # a JSON body
    # A multipart upload (image edits, audio files): spooled to disk as it arrives, streamed on.
    max_multipart_bytes: PositiveInt = 50 * 1000 * 1000
    # Reservation when the client sends no max_tokens: the most we expect a reply to cost.
    default_max_tokens: PositiveInt = 4096
    key_cache_ttl_s: NonNegativeFloat = 5.0
    # How often each worker reads the key change log (CLI changes without Redis); 0 = never.
    key_change_poll_s: NonNegativeFloat = 0.5
    max_json_depth: PositiveInt = 64
    # Slow clients (slowloris): a connection must deliver its request line and headers, then
    # its body, within these; otherwise it gets 408 and is closed (see server_protocol.py).
    header_timeout_s: PositiveFloat = 10.0
    body_timeout_s: PositiveFloat = 60.0
    # Connections (and requests in flight) one worker accepts; over it, 503 server_overloaded.
    max_connections_per_worker: PositiveInt | None = 2048
    # Requests in flight per key and worker for keys without their own max_concurrent; 0 = off.
    default_max_concurrent: NonNegativeInt = 64
    # What Sluice holds in memory of one upstream answer (after decompression): a whole
    # (non-stream) body, and one SSE event. Past either the request ends with a 502
    # upstream_response_too_large. The body cap leaves room for the largest embeddings batches.
    max_upstream_body_bytes: PositiveInt = 64 * 1024 * 1024
    max_upstream_event_bytes: PositiveInt = 8 * 1024 * 1024
    # A binary answer (speech audio) is relayed as it arrives, never held; past this many
    # bytes the upstream is cut off (the client's response ends early).
    max_upstream_binary_bytes: PositiveInt = 512 * 1024 * 1024


class AuthConfig(_Strict, frozen=True):
    """Failed authentications per client address (see docs/config.md, ``auth``)."""

    # Unknown API keys that cost a database read, wrong admin or metrics tokens: past this
    # many per address in ``window_s``, the address gets 429 too_many_failed_auth. 0 = off.
    max_failures: NonNegativeInt = 20
    window_s: PositiveFloat = 60.0
    tracked_addresses: PositiveInt = 10_000  # per worker; the oldest is forgotten beyond it
    # Unknown keys are remembered apart from known ones (a flood cannot evict a real key).
    unknown_key_cache_size: PositiveInt = 10_000
    unknown_key_ttl_s: NonNegativeFloat = 10.0


class TimeoutsConfig(_Strict, frozen=True):
    connect_s: PositiveFloat = 10.0
    first_byte_s: PositiveFloat = 120.0
    idle_s: PositiveFloat = 120.0
    total_s: PositiveFloat = 900.0
    # After a client leaves mid-stream, how long the upstream is still read for its usage
    # report (the cost of what it generated); 0 bills the reservation at once.
    disconnect_drain_s: NonNegativeFloat = 60.0


class RetryConfig(_Strict, frozen=True):
    max_attempts: PositiveInt = 3
    deadline_s: PositiveFloat = 120.0
    retry_on_status: list[int] = msgspec.field(default_factory=lambda: list(DEFAULT_RETRY_STATUSES))
    max_retry_after_s: NonNegativeFloat = 10.0

    def __post_init__(self) -> None:
        # Retrying the client's own mistake elsewhere only multiplies it.
        bad = sorted(set(self.retry_on_status) & NEVER_RETRY_STATUSES)
        if bad:
            raise ValueError(
                f"statuses {bad} in retry_on_status are the client's fault and are never retried"
            )


class CircuitConfig(_Strict, frozen=True):
    """Per channel and per channel+model circuit breakers (see docs/reliability.md)."""

    consecutive_failures: PositiveInt = 5
    error_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    window_s: PositiveFloat = 60.0
    min_requests: PositiveInt = 20
    cooldown_s: PositiveFloat = 30.0
    # Disabled channels (dead upstream key / no credit) are probed this often; 0 = never.
    probe_interval_s: NonNegativeFloat = 300.0
    # An upstream 401/402/403 is confirmed with the channel's own test request before the
    # channel is disabled; at most one such probe per channel (and worker) this often.
    confirm_interval_s: NonNegativeFloat = 30.0


class ImageFetchConfig(_Strict, frozen=True):
    """Remote image URLs Sluice downloads for Anthropic and Gemini channels, per request.

    Every byte and second here is spent on a URL the tenant chose, before the upstream is
    called: the caps keep one request from holding a worker's memory or time.
    """

    max_images: PositiveInt = 20
    max_image_bytes: PositiveInt = 5 * 1024 * 1024  # Anthropic's per-image limit
    # All images of the request together, as received (never decompressed).
    max_total_bytes: PositiveInt = 20 * 1024 * 1024
    # All fetches of the request together; also bounded by what is left of retry.deadline_s.
    timeout_s: PositiveFloat = 15.0


class UsageConfig(_Strict, frozen=True):
    batch_interval_ms: PositiveInt = 50
    batch_max_rows: PositiveInt = 500
    buffer_max_rows: PositiveInt = 100_000


class S3Config(_Strict, frozen=True):
    """An S3-compatible bucket for files (``files.backend: s3``; needs the ``s3`` extra)."""

    bucket: Annotated[str, msgspec.Meta(min_length=1)]
    prefix: str = "sluice/files/"
    endpoint_url: str | None = None  # MinIO, Ceph, R2...; unset: AWS
    region: str | None = None
    # Unset: boto3's own chain (environment, shared config, instance role).
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None


class FilesConfig(_Strict, frozen=True):
    """Files uploaded for the Batch API and the batches' output files (docs/tasks.md)."""

    backend: Literal["local", "s3"] = "local"
    # Local backend: unset puts files in ``files/`` beside the SQLite database (or under
    # ``./.sluice/`` with PostgreSQL). Replicas on several hosts need the S3 backend.
    directory: str | None = None
    max_bytes: PositiveInt = 200 * 1024 * 1024
    s3: S3Config | None = None

    def __post_init__(self) -> None:
        if self.backend == "s3" and self.s3 is None:
            raise ValueError("files.s3 is required when files.backend is s3")


class BatchesConfig(_Strict, frozen=True):
    """How each worker runs batch lines through its own relay (docs/tasks.md)."""

    enabled: bool = True  # false: this replica runs no batch lines (the API still answers)
    # Lines in flight at once per worker, over all the batches it runs.
    concurrency: PositiveInt = 4
    # Lines started per second per worker; 0 = as fast as ``concurrency`` allows.
    lines_per_second: NonNegativeFloat = 10.0
    # Share of the price taken off batch lines: 0.5 bills them at half price.
    discount: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    # Tries per line for retryable answers (429 other than a spent budget, 5xx).
    max_attempts: PositiveInt = 3
    retry_backoff_s: NonNegativeFloat = 1.0
    # A worker holds a batch for this long and renews it every third of it; a replica that
    # dies loses its batches to another after at most this.
    lease_s: PositiveFloat = 30.0
    poll_s: PositiveFloat = 1.0  # how often a worker looks for batches to run
    max_active_per_worker: PositiveInt = 2
    max_lines: PositiveInt = 50_000  # per input file


class ResponsesConfig(_Strict, frozen=True):
    """The Responses API on channels that translate it to chat (stored responses)."""

    # Stored responses (``store``, the default) are kept this long, then hidden and deleted.
    retention_days: PositiveFloat = 30.0


class CorsConfig(_Strict, frozen=True):
    allow_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    max_age_s: int = 600


class ConsoleConfig(_Strict, frozen=True):
    """The web console at /console (sluice.console)."""

    enabled: bool = True
    # How long a console sign-in lasts; the cookie and its signature expire together.
    session_ttl_s: PositiveFloat = 12 * 3600.0
    # How often each server reads the runtime channel version (changes made elsewhere).
    channel_poll_s: PositiveFloat = 0.5
    # "auto": cookies are Secure when the request came over HTTPS; "always": also behind a
    # proxy that terminates TLS and forwards plain HTTP.
    secure_cookies: Literal["auto", "always"] = "auto"


class Settings(_Strict, frozen=True):
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    admin_key: Secret | None = None
    # Encrypts runtime channels' upstream keys at rest (sluice.secret_box); else the
    # SLUICE_SECRETS_KEY environment variable, else a generated file in the data directory.
    secrets_key: Secret | None = None
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    # Bearer token for /metrics and /readyz details; unset: only local, unproxied requests.
    metrics_token: Secret | None = None
    # When Redis is down: "open" keeps serving with per-replica limits, "closed" rejects.
    redis_failure_policy: Literal["open", "closed"] = "open"
    # With Redis, a worker admits a busy key's requests from a slice of its limits and budget
    # granted in advance (no round trip per request); false admits every request in Redis.
    redis_allowances: bool = True
    log_level: str = "info"
    log_bodies: bool = False
    cors: CorsConfig = msgspec.field(default_factory=CorsConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    circuit: CircuitConfig = msgspec.field(default_factory=CircuitConfig)
    pricing: PricingConfig = msgspec.field(default_factory=PricingConfig)
    usage: UsageConfig = msgspec.field(default_factory=UsageConfig)
    image_fetch: ImageFetchConfig = msgspec.field(default_factory=ImageFetchConfig)
    files: FilesConfig = msgspec.field(default_factory=FilesConfig)
    batches: BatchesConfig = msgspec.field(default_factory=BatchesConfig)
    tasks: TasksConfig = msgspec.field(default_factory=TasksConfig)  # Midjourney, Suno, video
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    shutdown_grace_s: NonNegativeFloat = 30.0
    # Idle client connections are kept this long. Longer than clients' own idle limits (httpx
    # 5 s, aiohttp 15 s, most load balancers 60 s), so the client always closes first and
    # never sends a request on a connection the server is closing at that very moment.
    keep_alive_s: PositiveFloat = 75.0
    # Peers (CIDRs) whose X-Forwarded-For is believed: the load balancers in front of Sluice.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    channels: list[AnyChannelConfig] = msgspec.field(default_factory=list)
    source_path: str | None = None

    def __post_init__(self) -> None:
        _check_trusted_proxies(self.trusted_proxies)
        names = [c.name for c in self.channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"channels: duplicate channel names: {', '.join(duplicates)}")
        if self.admin_key is not None:
            length = len(self.admin_key.get_secret_value())
            if length < ADMIN_KEY_MIN_LENGTH:
                raise ValueError(
                    f"admin_key: must be at least {ADMIN_KEY_MIN_LENGTH} characters, got {length} "
                    "(omit it to have one generated, or use e.g. `openssl rand -hex 24`)"
                )


def _check_trusted_proxies(cidrs: list[str]) -> None:
    for cidr in cidrs:
        if cidr.strip() in ("*", "0.0.0.0/0", "::/0"):
            # Trusting every peer lets any client choose the address IP allow-lists check.
            raise ValueError(
                f"trusted_proxies: {cidr!r} would trust every client's X-Forwarded-For; "
                "list the addresses of your load balancers instead"
            )
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(
                f"trusted_proxies: {cidr!r} is not an IP address or CIDR network"
            ) from None


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


_PATH_STEP = re.compile(r"(?:^|\.)(\w+)|\[[^\]]*\]")


def _allowed_values(path: str) -> tuple[object, ...] | None:
    """The choices of the ``Literal`` field at ``path`` (``channels[0].type``), if it is one."""
    import msgspec.inspect  # only on a config error: workers never need it

    info: msgspec.inspect.Type = msgspec.inspect.type_info(Settings)
    for step in _PATH_STEP.finditer(path):
        if isinstance(info, msgspec.inspect.UnionType):
            info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        if step[1] is not None and isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == step[1]), info)
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
            info = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type
        else:
            return None
    return info.values if isinstance(info, msgspec.inspect.LiteralType) else None


_CHANNEL_PATH = re.compile(r"^channels\[(\d+)\](\.type)?$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]*)`$")


def _channel_message(message: str, path: str, data: dict[str, Any]) -> str | None:
    """A clearer message for a channel's ``type`` or a field its type does not have."""
    found = _CHANNEL_PATH.match(path)
    if found is None:
        return None
    types = ", ".join(sorted(type_name(c) for c in CHANNEL_CONFIGS))
    if found[2] is not None and message.startswith("Invalid value"):
        # msgspec's word for an unknown tag; the same text as a wrong value of a Literal.
        return message.replace("Invalid value", "Invalid enum value", 1) + (
            f" (expected one of: {types})"
        )
    if message.startswith("Object missing required field `type`"):
        return f"{message} (one of: {types})"
    unknown = _UNKNOWN_FIELD.match(message)
    channels = data.get("channels")
    if unknown is None or not isinstance(channels, list):
        return None
    index = int(found[1])
    entry = channels[index] if index < len(channels) else None
    kind = entry.get("type") if isinstance(entry, dict) else None
    owners = owners_of_field(unknown[1])
    if owners:
        return (
            f"`{unknown[1]}` is not a field of type '{kind}' (it belongs to type"
            f"{'s' if len(owners) > 1 else ''} {', '.join(repr(o) for o in owners)})"
        )
    return f"{message} (not a field of type '{kind}')"


def _format_validation_error(exc: msgspec.ValidationError, data: dict[str, Any]) -> str:
    message, path = split_validation_error(exc)
    if path is None:
        return f"invalid configuration:\n  {message}"
    text = f"{path or '(root)'}: {_channel_message(message, path, data) or message}"
    choices = _allowed_values(path)
    if choices and message.startswith("Invalid enum value"):
        text += " (expected one of: " + ", ".join(map(str, choices)) + ")"
    return f"invalid configuration:\n  {text}"


def parse_settings(raw: Any, source_path: str | None = None) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a YAML mapping at the top level")
    data = _interpolate(raw)
    if source_path is not None:
        data["source_path"] = source_path
    try:
        # strict=False: values that came through ${ENV} are strings ("30", "true") and are
        # accepted for numbers and booleans, as a YAML literal would be.
        return msgspec.convert(data, Settings, strict=False, dec_hook=_decode_secret)
    except msgspec.ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, data)) from None


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
    """The embedded default: SQLite, in-process limits, the local channels whose engines are
    installed (the ``local`` extra): chat (SmolLM2) and audio (hibari, Whisper tiny.en)."""
    channels: list[dict[str, Any]] = []
    # Local imports: optional extras, and modules that import settings themselves.
    from sluice.local_audio.asr import LOCAL_TRANSCRIPTION_MODEL, transcription_available
    from sluice.local_audio.tts import LOCAL_SPEECH_MODEL, speech_available
    from sluice.local_model import local_model_available

    overrides: dict[str, dict[str, float]] = {LOCAL_MODEL_NAME: {"input": 0.0, "output": 0.0}}
    if local_model_available():
        channels.append(
            {
                "name": "local",
                "type": "local",
                "models": [LOCAL_MODEL_NAME],
                "stream_usage": False,
            }
        )
    audio_models: list[str] = []
    aliases: dict[str, str] = {}
    if speech_available():
        audio_models.append(LOCAL_SPEECH_MODEL)
        # OpenAI's speech model names, so clients written for OpenAI work unchanged.
        aliases |= dict.fromkeys(("tts-1", "tts-1-hd", "gpt-4o-mini-tts"), LOCAL_SPEECH_MODEL)
        overrides[LOCAL_SPEECH_MODEL] = {"per_1m_characters": 0.0}
    if transcription_available():
        audio_models.append(LOCAL_TRANSCRIPTION_MODEL)
        aliases["whisper-1"] = LOCAL_TRANSCRIPTION_MODEL
        overrides[LOCAL_TRANSCRIPTION_MODEL] = {"per_audio_second": 0.0}
    if audio_models:
        channels.append(
            {
                "name": "local-audio",
                "type": "local-audio",
                "models": audio_models,
                "model_map": aliases,
            }
        )
    return parse_settings({"channels": channels, "pricing": {"overrides": overrides}})
