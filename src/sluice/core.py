"""The neutral types every layer speaks: endpoints, one relay call, upstream requests and
failures, parsed results and usage.

This module depends on nothing else in the package (standard library only), so ``protocol``,
``providers``, ``metering`` and ``relay`` can share these types without importing each other.
Provider-specific contracts (``providers.base.Adapter``) and prices (``metering.pricing``) build
on it; nothing here knows a provider, a price or a key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, Protocol

__all__ = [
    "Endpoint",
    "FailureKind",
    "MeteredUnits",
    "ParsedResponse",
    "RelayCall",
    "StreamKind",
    "StreamTranslator",
    "StreamedBody",
    "UploadedForm",
    "UpstreamFailure",
    "UpstreamRequest",
    "UsageTokens",
]

# The name of an endpoint spec (``sluice.endpoints``): "chat", "embeddings", "images", ... It is
# an open set: an endpoint family is added by registering its spec, not by editing a Literal.
Endpoint = str
# client: the request itself is wrong (pass through as 4xx, never retry)
# auth / billing: the channel's own credentials or account are unusable (hide details)
# rate_limit / overloaded / server / bad_response / timeout: the upstream's fault (retryable)
FailureKind = Literal[
    "client", "auth", "billing", "rate_limit", "overloaded", "server", "bad_response", "timeout"
]
# How a streamed answer is shaped. chunks: chat-shaped ``data:`` chunks ending in ``[DONE]``,
# usage asked for with ``stream_options`` (chat, completions). events: typed events
# (``event: image_generation.partial_image`` ...) that OpenAI-wire upstreams send exactly as the
# client expects them; usage comes in the event that ends the stream, and no ``stream_options``
# is sent (those endpoints refuse it).
StreamKind = Literal["chunks", "events"]


@dataclass(frozen=True, slots=True)
class MeteredUnits:
    """What a request used besides tokens (images, audio, TTS, rerank, tasks); whole units."""

    images: int = 0
    image_variant: str = ""  # "SIZE/QUALITY" of the images ("1024x1024/hd"): picks the price
    audio_seconds: int = 0  # the endpoint rounds a started second up
    characters: int = 0  # text-to-speech input
    search_units: int = 0  # rerank: one query with up to 100 documents
    calls: int = 0  # requests or tasks billed at a fixed price each
    video_seconds: int = 0  # generated video, priced by model and size
    # The upstream reported the tokens these units took (gpt-image models report their usage):
    # a model with token prices is billed those tokens and the units are only counted; a model
    # priced per unit alone is still billed per unit (``ModelRate.cost``).
    tokens_reported: bool = False


@dataclass(frozen=True, slots=True)
class UsageTokens:
    prompt: int = 0
    completion: int = 0
    cached: int = 0  # part of prompt read from the provider's prompt cache
    cache_write: int = 0  # part of prompt written to the provider's prompt cache
    image_prompt: int = 0  # part of prompt that was image input (gpt-image edits): its own rate
    # Units other than tokens; None (chat, completions, embeddings) means none: one field
    # instead of six keeps building a chat usage cheap.
    units: MeteredUnits | None = None


class StreamedBody(Protocol):
    """A request body sent to the upstream while it is read (a multipart upload from its
    spool), never assembled in memory; ``length`` is exact, so no chunked encoding is needed."""

    @property
    def content_type(self) -> str: ...

    @property
    def length(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class UploadedForm(Protocol):
    """A client's multipart form, its file parts spooled (``sluice.relay.multipart``)."""

    def encoded(self, replace: Mapping[str, str]) -> StreamedBody:
        """The form re-encoded for an upstream, the text fields in ``replace`` substituted,
        or added when the client sent none (the mapped or default model name); readable once
        per call, so each attempt gets its own."""
        ...

    def spooled_file(self, name: str) -> BinaryIO | None:
        """The spooled bytes of the first file part called ``name`` (seek before reading), for
        an estimate that reads a file's headers (the duration of an audio upload)."""
        ...


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"
    stream: StreamedBody | None = None  # sent instead of ``body`` when set


@dataclass(frozen=True, slots=True)
class RelayCall:
    """One validated client call, as the adapter sees it."""

    endpoint: Endpoint
    path: str  # the endpoint's OpenAI path below the API root ("/chat/completions")
    body: dict[str, Any]  # the client's JSON, OpenAI format, unknown fields included
    raw_body: bytes  # the same, as received (forwarded untouched when nothing changes)
    requested_model: str
    upstream_model: str
    stream: bool
    client_wants_usage: bool  # stream_options.include_usage as the client sent it
    # Provider-native fields a client dialect received that have no OpenAI equivalent every
    # upstream accepts, keyed by provider namespace (``{"anthropic": {"thinking": {...}}}``).
    # Kept out of ``body`` so OpenAI-compatible channels forward ``raw_body`` untouched; the
    # adapter of the matching provider applies the fields it knows, every other one ignores them.
    # None (not an empty dict) when there are none: no allocation for the common call.
    extensions: Mapping[str, Mapping[str, Any]] | None = None
    # Largest upstream SSE event accepted (``limits.max_upstream_event_bytes``); 0 = no cap.
    max_event_bytes: int = 0
    # A multipart request's form (``body`` then holds its text fields): forwarded re-encoded
    # from its spool instead of ``raw_body``.
    upload: UploadedForm | None = None
    stream_kind: StreamKind = "chunks"  # the endpoint spec's ``stream``


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    body: bytes  # OpenAI-format JSON for the client
    usage: UsageTokens | None  # None when the upstream reported none


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """An upstream error, classified, with a message that is safe to show the client."""

    status: int  # HTTP status for the client
    kind: FailureKind
    message: str
    type: str = "upstream_error"
    code: str | None = None
    param: str | None = None
    retry_after_s: float | None = None
    upstream_status: int | None = None

    def to_openai_error(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class StreamTranslator(Protocol):
    """Incremental translation of one upstream stream into OpenAI SSE frames."""

    def feed(self, data: bytes) -> list[bytes]:
        """Consume raw upstream bytes; return complete client frames (``data: …\\n\\n``)."""
        ...

    def close(self) -> list[bytes]:
        """The upstream ended: return the final frames, ending with ``[DONE]``, or an error
        frame if the stream was truncated."""
        ...

    @property
    def usage(self) -> UsageTokens | None:
        """Usage the upstream reported, if any (the final value, never a sum of deltas)."""
        ...

    @property
    def failure(self) -> UpstreamFailure | None:
        """Set when the upstream sent an error event or the stream was cut short."""
        ...

    def delivered_text(self) -> str:
        """All generated text and tool-call arguments forwarded so far, for local counting."""
        ...

    def forget_delivered(self) -> None:
        """Drop the text kept so far for local counting: the relay has what it needs (a
        stream read on after its client left keeps no more than one read's worth)."""
        ...
