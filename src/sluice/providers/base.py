"""The adapter contract every provider module implements.

Adapters are pure: they turn a validated OpenAI-format call into an ``UpstreamRequest`` (URL,
headers, body bytes) and turn the provider's answer, whole or as stream bytes, back into OpenAI
format. They never perform I/O; ``sluice.upstream`` sends and ``sluice.relay`` orchestrates.
The types they exchange are the neutral ones in ``sluice.core``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar

from sluice.core import (
    ParsedResponse,
    RelayCall,
    StreamTranslator,
    UpstreamFailure,
    UpstreamRequest,
)
from sluice.providers.configs import ChannelConfig

__all__ = ["Adapter", "DONE_FRAME", "sse_frame"]

DONE_FRAME = b"data: [DONE]\n\n"


def sse_frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


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
