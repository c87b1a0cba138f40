"""The adapter contract every provider module implements.

Adapters are pure: they turn a validated OpenAI-format call into an ``UpstreamRequest`` (URL,
headers, body bytes) and turn the provider's answer, whole or as stream bytes, back into OpenAI
format. They never perform I/O; ``sluice.upstream`` sends and ``sluice.relay`` orchestrates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from sluice.metering.pricing import UsageTokens
from sluice.providers.configs import ChannelConfig

__all__ = [
    "Adapter",
    "Endpoint",
    "FailureKind",
    "ParsedResponse",
    "RelayCall",
    "StreamTranslator",
    "UpstreamFailure",
    "UpstreamRequest",
    "UsageTokens",
    "sse_frame",
    "DONE_FRAME",
]

Endpoint = Literal["chat", "completions", "embeddings", "moderations"]
# client: the request itself is wrong (pass through as 4xx, never retry)
# auth / billing: the channel's own credentials or account are unusable (hide details)
# rate_limit / overloaded / server / bad_response / timeout: the upstream's fault (retryable)
FailureKind = Literal[
    "client", "auth", "billing", "rate_limit", "overloaded", "server", "bad_response", "timeout"
]

DONE_FRAME = b"data: [DONE]\n\n"


def sse_frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class RelayCall:
    """One validated client call, as the adapter sees it."""

    endpoint: Endpoint
    body: dict[str, Any]  # the client's JSON, OpenAI format, unknown fields included
    raw_body: bytes  # the same, as received (forwarded untouched when nothing changes)
    requested_model: str
    upstream_model: str
    stream: bool
    client_wants_usage: bool  # stream_options.include_usage as the client sent it
    # Anthropic ``thinking`` from a client speaking the Anthropic API. It has no OpenAI
    # equivalent every upstream accepts, so it is not in ``body``; Anthropic channels use it.
    native_thinking: dict[str, Any] | None = None
    # Largest upstream SSE event accepted (``limits.max_upstream_event_bytes``); 0 = no cap.
    max_event_bytes: int = 0


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


# The channel config an adapter reads (its provider's, or a base of several providers').
ConfigT = TypeVar("ConfigT", bound=ChannelConfig, contravariant=True)


class Adapter(Protocol[ConfigT]):
    """A provider's translation; which endpoints it serves is in its config's capabilities."""

    name: str

    def build_request(self, call: RelayCall, channel: ConfigT) -> UpstreamRequest: ...

    def parse_response(self, call: RelayCall, body: bytes) -> ParsedResponse:
        """Raise ``UpstreamBadResponse`` when the body is not what the provider promises."""
        ...

    # ``secret`` is the channel's key: upstream messages that echo it are masked before a
    # tenant sees them (``failures.redact_secrets``), in error bodies and in stream events.
    def stream_translator(self, call: RelayCall, secret: str = "") -> StreamTranslator: ...

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, secret: str = ""
    ) -> UpstreamFailure: ...
