"""Cohere (``type: cohere``): rerank through Cohere's v2 API.

``POST {base_url}/v2/rerank`` with ``Authorization: Bearer``. The v2 API ranks strings only, so
an object document is sent as its ``text`` when that is all it holds, else as YAML (Cohere's
advice for structured documents: field names and values stay readable to the model).
``max_chunks_per_doc`` (the v1 parameter) has no v2 equivalent and is not sent; v2 never echoes
documents, so ``return_documents`` is not sent either (the rerank spec adds them back from the
request). The answer is returned in the rerank shape, ``meta.billed_units.search_units`` kept,
so the search units Cohere bills are the ones Sluice bills. Errors are ``{"message": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import yaml

from sluice.core import ParsedResponse, RelayCall, UpstreamFailure, UpstreamRequest, UsageTokens
from sluice.errors import InvalidRequest, UpstreamBadResponse
from sluice.providers.configs import CohereConfig
from sluice.providers.failures import classify

__all__ = [
    "CohereAdapter",
    "DEFAULT_BASE_URL",
    "cohere_document",
    "cohere_error_message",
    "rerank_body",
]

DEFAULT_BASE_URL = "https://api.cohere.com"
# Cohere's own statuses: 498 an invalid API key, 499 a request cancelled on their side.
_INVALID_TOKEN = 498
_CANCELLED = 499
# The request fields the v2 rerank API takes besides model, query and documents.
_FORWARDED = ("top_n", "max_tokens_per_doc")


def cohere_document(document: str | dict[str, Any]) -> str:
    if isinstance(document, str):
        return document
    text = document.get("text")
    if isinstance(text, str) and len(document) == 1:
        return text
    dumped: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return dumped.rstrip("\n")


def rerank_body(call: RelayCall) -> dict[str, Any]:
    body = call.body
    out: dict[str, Any] = {
        "model": call.upstream_model,
        "query": body["query"],
        "documents": [cohere_document(d) for d in body["documents"]],
    }
    for name in _FORWARDED:
        if body.get(name) is not None:
            out[name] = body[name]
    return out


def cohere_error_message(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return message if isinstance(message, str) else None


class CohereAdapter:
    name = "cohere"

    def build_request(self, call: RelayCall, channel: CohereConfig) -> UpstreamRequest:
        if call.endpoint != "rerank":  # routing never sends it: capabilities say rerank only
            raise InvalidRequest(
                f"The endpoint '{call.endpoint}' is not supported by Cohere channels.",
                param="model",
                code="unsupported_endpoint",
            )
        base = channel.base_url or DEFAULT_BASE_URL
        for suffix in ("/v2", "/v1"):  # a base_url copied with its version is tolerated
            base = base.removesuffix(suffix)
        headers = {"content-type": "application/json", "accept": "application/json"}
        secret = channel.api_key.get_secret_value()
        if secret:
            headers["authorization"] = f"Bearer {secret}"
        headers.update(channel.headers)
        return UpstreamRequest(
            url=f"{base}/v2/rerank", headers=headers, body=orjson.dumps(rerank_body(call))
        )

    def parse_response(self, call: RelayCall, body: bytes) -> ParsedResponse:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse("The upstream returned a body that is not JSON.") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("results"), list):
            raise UpstreamBadResponse("The upstream rerank answer has no results.")
        answer: dict[str, Any] = {"results": parsed["results"]}
        if isinstance(parsed.get("id"), str):
            answer["id"] = parsed["id"]
        meta = parsed.get("meta")
        if isinstance(meta, dict):
            answer["meta"] = meta
        # Cohere reports search units, not tokens: the rerank spec counts the tokens.
        return ParsedResponse(body=orjson.dumps(answer), usage=None)

    def stream_translator(self, call: RelayCall, secret: str = "") -> NoStream:
        return NoStream()

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, secret: str = ""
    ) -> UpstreamFailure:
        if status == _INVALID_TOKEN:
            status = 401
        elif status == _CANCELLED:
            status = 502  # not the client's doing: another channel may answer
        return classify(status, headers, message=cohere_error_message(body), secret=secret)


class NoStream:
    """Rerank answers are never streamed (the spec refuses ``stream``); this stands in for the
    translator the adapter contract requires and fails the stream if one were ever opened."""

    _FAILURE = UpstreamFailure(
        status=502,
        kind="bad_response",
        message="Cohere channels do not stream.",
        code="upstream_stream_error",
    )

    @property
    def usage(self) -> UsageTokens | None:
        return None

    @property
    def failure(self) -> UpstreamFailure | None:
        return self._FAILURE

    def feed(self, data: bytes) -> list[bytes]:
        return []

    def close(self) -> list[bytes]:
        return []

    def delivered_text(self) -> str:
        return ""

    def forget_delivered(self) -> None:
        return None
