"""Google Gemini (Generative Language API, ``v1beta``) behind the OpenAI interface.

Chat goes to ``models/{model}:generateContent`` (``:streamGenerateContent?alt=sse`` when
streaming) and embeddings to ``models/{model}:batchEmbedContents``. The key travels in the
``x-goog-api-key`` header only: a key in the URL would end up in access logs and error traces.
Request translation lives in ``gemini_request``, response translation in ``gemini_response``
and ``gemini_stream``; this module ties them to the ``Adapter`` contract.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from sluice.core import ParsedResponse, RelayCall, UpstreamFailure, UpstreamRequest
from sluice.errors import UpstreamBadResponse
from sluice.providers.configs import GeminiConfig
from sluice.providers.failures import classify
from sluice.providers.gemini_request import chat_body, embed_body
from sluice.providers.gemini_response import chat_completion, embedding_list, failure_from_error
from sluice.providers.gemini_stream import GeminiStreamTranslator
from sluice.providers.url_path import model_path_segment

__all__ = ["GeminiAdapter", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
_API_VERSIONS = ("/v1beta", "/v1", "/v1alpha")


def _api_root(channel: GeminiConfig) -> str:
    """``base_url`` may be the bare host or already end in an API version."""
    base = channel.base_url or DEFAULT_BASE_URL
    return base if base.endswith(_API_VERSIONS) else base + "/v1beta"


def _model_id(model: str) -> str:
    return model.removeprefix("models/")


def _loads(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse("The upstream returned a body that is not JSON.") from None


class GeminiAdapter:
    """Adapter for channel type ``gemini``: chat and embeddings."""

    name = "gemini"

    def build_request(self, call: RelayCall, channel: GeminiConfig) -> UpstreamRequest:
        model = _model_id(call.upstream_model)
        # A client-chosen name must stay inside the models/ path segment: refused (400) if not.
        resource = f"{_api_root(channel)}/models/{model_path_segment(model, call.requested_model)}"
        if call.endpoint == "embeddings":
            url = resource + ":batchEmbedContents"
            body = embed_body(call.body, f"models/{model}")
        elif call.stream:
            url = resource + ":streamGenerateContent?alt=sse"
            body = chat_body(call.body, channel.safety_settings, model)
        else:
            url = resource + ":generateContent"
            body = chat_body(call.body, channel.safety_settings, model)
        headers = {"content-type": "application/json"}
        secret = channel.api_key.get_secret_value()
        if secret:
            headers["x-goog-api-key"] = secret
        headers.update(channel.headers)
        return UpstreamRequest(url=url, headers=headers, body=orjson.dumps(body))

    def parse_response(self, call: RelayCall, body: bytes) -> ParsedResponse:
        parsed = _loads(body)
        if call.endpoint == "embeddings":
            encoding = call.body.get("encoding_format")
            out = embedding_list(parsed, call.requested_model, encoding)
            # Gemini reports no usage for embeddings: the relay counts the input locally.
            return ParsedResponse(body=orjson.dumps(out), usage=None)
        n = call.body.get("n")
        completion, usage = chat_completion(
            parsed, call.requested_model, n if isinstance(n, int) else 1
        )
        return ParsedResponse(body=orjson.dumps(completion), usage=usage)

    def stream_translator(self, call: RelayCall, secret: str = "") -> GeminiStreamTranslator:
        n = call.body.get("n")
        return GeminiStreamTranslator(
            model=call.requested_model,
            n=n if isinstance(n, int) else 1,
            include_usage=call.client_wants_usage,
            secret=secret,
            max_event_bytes=call.max_event_bytes,
        )

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, secret: str = ""
    ) -> UpstreamFailure:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
            error = parsed[0].get("error")  # streaming endpoints wrap errors in a list
        if not isinstance(error, dict):
            return classify(status, headers, message=None)
        return failure_from_error(status, headers, error, secret)
