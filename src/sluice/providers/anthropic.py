"""Anthropic Messages API channels (``type: anthropic``): chat completions only.

Requests go to ``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``.
Translation lives in ``anthropic_request`` (request), ``anthropic_response`` (whole response)
and ``anthropic_stream`` (SSE events); this module ties them together and classifies errors.
Remote image URLs are inlined before translation by ``sluice.providers.media``.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from sluice.core import ParsedResponse, RelayCall, UpstreamFailure, UpstreamRequest
from sluice.providers.anthropic_request import ANTHROPIC_VERSION, build_messages_body
from sluice.providers.anthropic_response import parse_message
from sluice.providers.anthropic_stream import AnthropicStreamTranslator
from sluice.providers.configs import AnthropicConfig
from sluice.providers.failures import classify

__all__ = ["AnthropicAdapter", "DEFAULT_BASE_URL", "anthropic_error_details"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
_OVERLOADED_STATUS = 529


def anthropic_error_details(body: bytes) -> tuple[str | None, str | None]:
    """(message, error type) from ``{"type":"error","error":{"type","message"}}``."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None
    message, kind = error.get("message"), error.get("type")
    return (
        message if isinstance(message, str) else None,
        kind if isinstance(kind, str) else None,
    )


class AnthropicAdapter:
    name = "anthropic"

    def build_request(self, call: RelayCall, channel: AnthropicConfig) -> UpstreamRequest:
        headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        secret = channel.api_key.get_secret_value()
        if secret:
            headers["x-api-key"] = secret
        headers.update(channel.headers)  # e.g. anthropic-beta
        body = orjson.dumps(build_messages_body(call))
        base = channel.base_url or DEFAULT_BASE_URL
        if base.endswith("/v1"):
            base = base[:-3]
        return UpstreamRequest(url=f"{base}/v1/messages", headers=headers, body=body)

    def parse_response(self, call: RelayCall, body: bytes) -> ParsedResponse:
        return parse_message(call, body)

    def stream_translator(self, call: RelayCall, secret: str = "") -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(call, secret)

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, secret: str = ""
    ) -> UpstreamFailure:
        message, kind = anthropic_error_details(body)
        if kind == "overloaded_error":
            status = _OVERLOADED_STATUS  # overloaded is retryable whatever status carried it
        elif kind == "billing_error" or (
            kind == "invalid_request_error" and message and "credit balance" in message.lower()
        ):
            # The channel's account is out of credit: the operator's problem, not the client's.
            status = 402
        elif kind in ("authentication_error", "permission_error") and status < 500:
            status = 401 if kind == "authentication_error" else 403
        return classify(
            status,
            headers,
            message=message,
            # Anthropic's client-side types (not_found_error, request_too_large, ...) are all
            # invalid requests in OpenAI's vocabulary.
            provider_type="invalid_request_error",
            secret=secret,
        )
