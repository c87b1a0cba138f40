"""The adapter of channels that run asynchronous tasks only (midjourney-proxy, Suno-API).

Their configs serve no relay endpoint (``capabilities.endpoints`` is empty), so the relay never
plans them and nothing here is called for a request; the registry still needs an adapter per
type. Their protocols live in ``providers/midjourney.py`` and ``providers/suno.py``; the tasks
subsystem (``sluice.tasks``) drives them.
"""

from __future__ import annotations

from collections.abc import Mapping

from sluice.core import (
    ParsedResponse,
    RelayCall,
    StreamTranslator,
    UpstreamFailure,
    UpstreamRequest,
)
from sluice.errors import InvalidRequest
from sluice.providers.configs import TaskChannelConfig
from sluice.providers.failures import classify

__all__ = ["TaskOnlyAdapter"]


class TaskOnlyAdapter:
    def __init__(self, name: str) -> None:
        self.name = name

    def _refuse(self) -> InvalidRequest:
        return InvalidRequest(
            f"Channels of type {self.name} run asynchronous tasks only.",
            code="unsupported_endpoint",
        )

    def build_request(self, call: RelayCall, channel: TaskChannelConfig) -> UpstreamRequest:
        raise self._refuse()

    def parse_response(self, call: RelayCall, body: bytes) -> ParsedResponse:
        raise self._refuse()

    def stream_translator(self, call: RelayCall, secret: str = "") -> StreamTranslator:
        raise self._refuse()

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, secret: str = ""
    ) -> UpstreamFailure:
        return classify(status, headers, message=None, secret=secret)
