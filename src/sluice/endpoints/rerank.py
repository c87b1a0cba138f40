"""Rerank: ``POST /v1/rerank`` in the Cohere / Jina shape, priced per search unit or per token.

Request: ``model``, ``query``, ``documents`` (strings, or objects: ``{"text": ...}`` or any
object a Jina-style upstream ranks), ``top_n``, ``return_documents``, ``max_chunks_per_doc``,
``max_tokens_per_doc``; other fields are forwarded. OpenAI's spec has no rerank, so the answer
is Sluice's own shape, the same whatever the channel (vLLM, llama.cpp, Jina and Cohere differ
in ids, echoed documents, whether ``top_n`` is honoured and where usage sits)::

    {"id", "model", "results": [{"index", "relevance_score", "document"?}],
     "usage": {"prompt_tokens", "total_tokens"}, "meta": {"billed_units": {"search_units"}}}

Results are in decreasing relevance, at most ``top_n``; ``document`` is present when
``return_documents`` is true (Cohere's default, false, applies otherwise): a string document as
``{"text": ...}``, an object as sent. Billing takes the upstream's own figures when it reports
them (tokens in ``usage``, search units in ``meta.billed_units``) and computes the rest: tokens
as counted locally, one search unit per started 100 documents.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import orjson

from sluice.core import MeteredUnits, ParsedResponse, UsageTokens
from sluice.endpoints.spec import EndpointSpec, Estimate, EstimateInput, MeterInput
from sluice.errors import InvalidRequest, UpstreamBadResponse
from sluice.protocol.validate import (
    RequestView,
    json_object,
    model_field,
    optional_bool,
    optional_int,
    simple_view,
)

__all__ = ["DOCUMENTS_PER_SEARCH_UNIT", "MAX_DOCUMENTS", "RERANK_SPECS", "validate_rerank"]

DOCUMENTS_PER_SEARCH_UNIT = 100  # Cohere: "one query with up to 100 documents"
MAX_DOCUMENTS = 10_000  # Cohere's and Jina's limit per request
# The smallest chunk a rerank upstream splits a long document into (Cohere's older models: about
# 500 tokens, query included); each chunk may be billed as a document, so the reservation counts
# a document as this many chunks at worst. Upstream tokenizers count differently from ours: the
# local count gets a quarter more.
_WORST_CHUNK_TOKENS = 500
_MAX_TOP_N = MAX_DOCUMENTS
# A cross-encoder reads each (query, document) pair with its own separators: XLM-R rerankers
# (bge-reranker) add four (<s> query </s></s> document </s>), BERT ones three.
_PAIR_SPECIAL_TOKENS = 4


def _fail(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def validate_rerank(body: Any) -> RequestView:
    body = json_object(body)
    model = model_field(body)
    query = body.get("query")
    if query is None:
        raise _fail("Missing required parameter: 'query'.", "query", "missing_required_parameter")
    if not isinstance(query, str):
        raise _fail("Invalid type for 'query': expected a string.", "query", "invalid_type")
    if not query.strip():
        raise _fail("Invalid 'query': empty string.", "query")
    _validate_documents(body.get("documents"))
    optional_int(body, "top_n", 1, _MAX_TOP_N)
    optional_int(body, "max_chunks_per_doc", 1, 1_000)
    optional_int(body, "max_tokens_per_doc", 1, 1_000_000)
    optional_bool(body, "return_documents")
    if optional_bool(body, "stream"):
        raise _fail("Rerank answers are not streamed.", "stream", "unsupported_parameter")
    return simple_view("rerank", model)


def _validate_documents(documents: Any) -> None:
    if documents is None:
        raise _fail(
            "Missing required parameter: 'documents'.", "documents", "missing_required_parameter"
        )
    if not isinstance(documents, list):
        raise _fail(
            "Invalid type for 'documents': expected an array of strings or objects.",
            "documents",
            "invalid_type",
        )
    if not documents:
        raise _fail(
            "Invalid 'documents': empty array. Expected an array with minimum length 1.",
            "documents",
            "empty_array",
        )
    if len(documents) > MAX_DOCUMENTS:
        raise _fail(
            f"Invalid 'documents': {len(documents)} documents; at most {MAX_DOCUMENTS} may be "
            "ranked in one request.",
            "documents",
            "array_above_max_length",
        )
    for index, document in enumerate(documents):
        if isinstance(document, str) or (isinstance(document, dict) and document):
            continue
        raise _fail(
            f"Invalid type for 'documents[{index}]': expected a string or a non-empty object.",
            f"documents[{index}]",
            "invalid_type",
        )


def _document_text(document: str | dict[str, Any]) -> str:
    """What a document weighs in tokens: its text, or an object's JSON."""
    if isinstance(document, str):
        return document
    text = document.get("text")
    if isinstance(text, str) and len(document) == 1:
        return text
    return orjson.dumps(document).decode()


def _estimate(given: EstimateInput) -> Estimate:
    """Every document is scored together with the query (a cross-encoder), so the prompt is the
    query and the pair's separators once per document, plus the documents; search units at the
    worst chunking."""
    tokens = given.tokens
    query = tokens.count_text(given.body["query"])
    prompt = 0
    chunks = 0
    for document in given.body["documents"]:
        pair = query + tokens.count_text(_document_text(document)) + _PAIR_SPECIAL_TOKENS
        prompt += pair
        chunks += max(1, math.ceil(pair * 5 / 4 / _WORST_CHUNK_TOKENS))
    units = MeteredUnits(search_units=math.ceil(chunks / DOCUMENTS_PER_SEARCH_UNIT))
    return Estimate(prompt_tokens=prompt, units=units)


def _search_units(given: MeterInput) -> MeteredUnits:
    # The reshaped answer always carries them (reported by the upstream, or computed).
    return MeteredUnits(search_units=given.response["meta"]["billed_units"]["search_units"])


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _reported_tokens(answer: dict[str, Any]) -> int | None:
    """Tokens an upstream says it read: ``usage`` (vLLM, Jina, llama.cpp: often only
    ``total_tokens``, all of them input) or Cohere's ``meta``."""
    usage = answer.get("usage")
    if isinstance(usage, dict):
        for name in ("prompt_tokens", "total_tokens"):
            found = _count(usage.get(name))
            if found is not None:
                return found
    meta = answer.get("meta")
    if isinstance(meta, dict):
        for where in (meta.get("billed_units"), meta.get("tokens")):
            if isinstance(where, dict) and _count(where.get("input_tokens")) is not None:
                return _count(where.get("input_tokens"))
    return None


def _reported_search_units(answer: dict[str, Any]) -> int | None:
    meta = answer.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    return _count(billed.get("search_units")) if isinstance(billed, dict) else None


def _ranked(answer: dict[str, Any], document_count: int) -> list[tuple[float, int]]:
    results = answer.get("results")
    if not isinstance(results, list):
        raise UpstreamBadResponse("The upstream rerank answer has no results.")
    ranked: list[tuple[float, int]] = []
    seen: set[int] = set()
    for item in results:
        if not isinstance(item, dict):
            raise UpstreamBadResponse("The upstream rerank answer has a result that is not one.")
        index = _count(item.get("index"))
        score = item.get("relevance_score")
        if index is None or index >= document_count or index in seen:
            raise UpstreamBadResponse("The upstream rerank answer names a document not sent.")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise UpstreamBadResponse("The upstream rerank answer has a result without a score.")
        seen.add(index)
        ranked.append((float(score), index))
    ranked.sort(key=lambda pair: (-pair[0], pair[1]))
    return ranked


def _as_document(document: str | dict[str, Any]) -> dict[str, Any]:
    return {"text": document} if isinstance(document, str) else document


def _reshape(given: MeterInput) -> ParsedResponse:
    answer = given.response
    if not isinstance(answer, dict):
        raise UpstreamBadResponse("The upstream rerank answer is not a JSON object.")
    body = given.body
    documents = body["documents"]
    ranked = _ranked(answer, len(documents))
    top_n = body.get("top_n")
    if top_n is not None:
        ranked = ranked[:top_n]  # not every upstream honours it (llama.cpp's older servers)
    with_documents = body.get("return_documents") is True
    results = []
    for score, index in ranked:
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if with_documents:
            result["document"] = _as_document(documents[index])
        results.append(result)
    tokens = _reported_tokens(answer)
    if tokens is None:
        tokens = given.estimate.prompt_tokens
    units = _reported_search_units(answer)
    if units is None:
        units = math.ceil(len(documents) / DOCUMENTS_PER_SEARCH_UNIT)
    upstream_id = answer.get("id")
    shaped = {
        "id": upstream_id if isinstance(upstream_id, str) and upstream_id else _new_id(),
        "model": given.view.model,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "meta": {"billed_units": {"search_units": units}},
    }
    usage = UsageTokens(prompt=tokens, units=MeteredUnits(search_units=units))
    return ParsedResponse(body=orjson.dumps(shaped), usage=usage)


def _probe(model: str) -> dict[str, Any]:
    return {"model": model, "query": "ping", "documents": ["pong"], "top_n": 1}


def _new_id() -> str:
    return f"rerank-{uuid.uuid4().hex}"


RERANK_SPECS = (
    EndpointSpec(
        name="rerank",
        # /v2/rerank: Cohere's own SDKs (v2 client) call it; the answer is a superset of theirs.
        paths=("/v1/rerank", "/rerank", "/v2/rerank"),
        upstream_path="/rerank",
        validate=validate_rerank,
        estimate=_estimate,
        units=_search_units,
        reshape=_reshape,
        probe_body=_probe,  # for rerank-only channels (Cohere): one search unit
    ),
)
