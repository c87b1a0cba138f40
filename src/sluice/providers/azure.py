"""Azure OpenAI channels (``type: azure``).

Azure speaks the OpenAI wire format; only addressing differs: the deployment is in the path,
the API version in the query and the key in an ``api-key`` header. Bodies, responses, errors
and streams are handled by composing the OpenAI adapter, never by copying it. The one stream
difference: Azure may open a stream with a chunk that has empty ``choices`` and only
``prompt_filter_results``; it is dropped because OpenAI never sends such a chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from sluice.core import (
    ParsedResponse,
    RelayCall,
    StreamTranslator,
    UpstreamFailure,
    UpstreamRequest,
    UsageTokens,
)
from sluice.providers.configs import AzureConfig
from sluice.providers.openai import OpenAIAdapter, openai_request
from sluice.providers.url_path import model_path_segment

__all__ = ["AzureAdapter", "AzureStreamTranslator", "DEFAULT_API_VERSION"]

# The latest GA data-plane version at the time of writing; channels may set api_version.
DEFAULT_API_VERSION = "2024-10-21"


class AzureStreamTranslator:
    """The OpenAI pass-through translator minus Azure's prompt-filter-only chunks."""

    def __init__(self, inner: StreamTranslator) -> None:
        self._inner = inner

    @staticmethod
    def _keep(frame: bytes) -> bool:
        # Byte scan, no decoding: a filter-only chunk has no choices and no usage.
        return not (
            b'"prompt_filter_results"' in frame
            and b'"choices":[]' in frame
            and b'"usage":{' not in frame
        )

    def _filtered(self, frames: list[bytes]) -> list[bytes]:
        kept: list[bytes] = []
        for frame in frames:
            if b'"prompt_filter_results"' not in frame:
                kept.append(frame)
                continue
            # The inner translator forwards runs of ordinary chunks as one frame: judge each.
            kept.extend(
                block + b"\n\n" for block in frame.split(b"\n\n") if block and self._keep(block)
            )
        return kept

    def feed(self, data: bytes) -> list[bytes]:
        return self._filtered(self._inner.feed(data))

    def close(self) -> list[bytes]:
        return self._filtered(self._inner.close())

    @property
    def usage(self) -> UsageTokens | None:
        return self._inner.usage

    @property
    def failure(self) -> UpstreamFailure | None:
        return self._inner.failure

    def delivered_text(self) -> str:
        return self._inner.delivered_text()

    def forget_delivered(self) -> None:
        self._inner.forget_delivered()


class AzureAdapter:
    name = "azure"

    def __init__(self) -> None:
        self._openai = OpenAIAdapter("azure")

    def build_request(self, call: RelayCall, channel: AzureConfig) -> UpstreamRequest:
        headers = {}
        secret = channel.api_key.get_secret_value()
        if secret:
            headers["api-key"] = secret
        headers.update(channel.headers)
        base = channel.base_url.removesuffix("/openai")
        if call.endpoint == "responses":
            # The Responses API is Azure's v1 API: one path for every deployment, named by the
            # body's model (the model_map target); no api-version, no stream_options.
            url = f"{base}/openai/v1/responses"
            return openai_request(url, headers, call, force_stream_usage=False)
        # model_map: model -> deployment; refused (400) if it cannot be one path segment.
        deployment = model_path_segment(call.upstream_model, call.requested_model)
        version = quote(channel.api_version or DEFAULT_API_VERSION, safe="")
        url = f"{base}/openai/deployments/{deployment}{call.path}?api-version={version}"
        # Deployment names are arbitrary, so OpenAI's reasoning-model rewrites (keyed on the
        # model name) are not applied; Azure ignores the body's model field.
        return openai_request(url, headers, call, force_stream_usage=channel.stream_usage)

    def parse_response(self, call: RelayCall, body: bytes) -> ParsedResponse:
        return self._openai.parse_response(call, body)

    def stream_translator(self, call: RelayCall, secret: str = "") -> StreamTranslator:
        if call.endpoint == "responses" or call.stream_kind == "events":
            return self._openai.stream_translator(call, secret)  # typed events passed through
        return AzureStreamTranslator(self._openai.chat_stream_translator(call, secret))

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, secret: str = ""
    ) -> UpstreamFailure:
        return self._openai.parse_error(status, headers, body, secret)
