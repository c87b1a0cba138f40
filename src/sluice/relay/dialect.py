"""The seam for clients that speak another API than OpenAI's (e.g. Anthropic's Messages API).

The relay works in OpenAI format end to end: admission validates an OpenAI chat body, adapters
translate to and from it, billing meters it. A ``Dialect`` sits at the two edges only: it turns
the client's request into an OpenAI body before admission, and turns the OpenAI-format result
(a whole JSON body, or the stream of OpenAI SSE frames, error frames included) into the client's
format on the way out. Errors raised as ``SluiceError`` are rendered by the dialect's route.

Fields of the client's API that have no OpenAI equivalent but that a channel of the same
provider understands travel beside the body, as ``extensions`` keyed by provider namespace (see
``core.RelayCall.extensions``), never inside it: OpenAI-compatible channels forward the body
untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request

__all__ = ["Dialect", "DialectContext"]


@dataclass(frozen=True, slots=True)
class DialectContext:
    """What the relay knows about an admitted request that a dialect needs to present it."""

    model: str  # the model name the client asked for
    prompt_tokens: int  # counted locally at admission (until the upstream reports usage)


class Dialect(Protocol):
    # Provider-native fields the client sent, by provider namespace (set by ``read_body``);
    # None when there are none.
    extensions: Mapping[str, Mapping[str, Any]] | None

    async def read_body(self, request: Request) -> tuple[dict[str, Any], bytes]:
        """Read and translate the client's body: (OpenAI body, its serialised bytes)."""
        ...

    def present_whole(self, context: DialectContext, body: bytes) -> bytes:
        """Re-shape a successful OpenAI-format JSON response body."""
        ...

    def present_stream(
        self, context: DialectContext, frames: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """Re-shape the OpenAI SSE frames of a stream (error frames included), lazily."""
        ...
