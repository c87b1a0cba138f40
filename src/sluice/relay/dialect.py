"""The seam for clients that speak another API than OpenAI's (e.g. Anthropic's Messages API).

The relay works in OpenAI format end to end: admission validates an OpenAI chat body, adapters
translate to and from it, billing meters it. A ``Dialect`` sits at the two edges only: it turns
the client's request into an OpenAI body before admission, and turns the OpenAI-format result
(a whole JSON body, or the stream of OpenAI SSE frames, error frames included) into the client's
format on the way out. Errors raised as ``SluiceError`` are rendered by the dialect's route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

if TYPE_CHECKING:
    from sluice.relay.admission import Admission

__all__ = ["Dialect"]


class Dialect(Protocol):
    # Anthropic ``thinking`` as the client sent it (set by ``read_body``); None when absent.
    native_thinking: dict[str, Any] | None

    async def read_body(self, request: Request) -> tuple[dict[str, Any], bytes]:
        """Read and translate the client's body: (OpenAI body, its serialised bytes)."""
        ...

    def present_whole(self, admission: Admission, body: bytes) -> bytes:
        """Re-shape a successful OpenAI-format JSON response body."""
        ...

    def present_stream(
        self, admission: Admission, frames: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """Re-shape the OpenAI SSE frames of a stream (error frames included), lazily."""
        ...
