"""The Cohere adapter's pure translation: rerank requests to Cohere's v2 API, answers and errors
back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.config_base import Secret
from sluice.core import RelayCall
from sluice.errors import InvalidRequest, UpstreamBadResponse
from sluice.providers.cohere import DEFAULT_BASE_URL, CohereAdapter, cohere_document
from sluice.providers.configs import CohereConfig

ADAPTER = CohereAdapter()
SECRET = "co-SECRET-0123456789abcdef"


def _call(body: dict[str, Any], upstream_model: str = "rerank-v3.5") -> RelayCall:
    return RelayCall(
        endpoint="rerank", path="/rerank", body=body, raw_body=orjson.dumps(body),
        requested_model=body["model"], upstream_model=upstream_model, stream=False,
        client_wants_usage=False,
    )  # fmt: skip


def _channel(**fields: Any) -> CohereConfig:
    return CohereConfig(name="co", api_key=Secret(SECRET), **fields)


@pytest.mark.parametrize(
    ("base_url", "url"),
    [("", f"{DEFAULT_BASE_URL}/v2/rerank"), ("https://co.example", "https://co.example/v2/rerank"),
     ("https://co.example/v2/", "https://co.example/v2/rerank"),
     ("https://co.example/v1", "https://co.example/v2/rerank")],
)  # fmt: skip
def test_requests_go_to_v2_rerank_with_a_bearer_key(base_url: str, url: str) -> None:
    body = {"model": "rr", "query": "q", "documents": ["a"]}
    request = ADAPTER.build_request(_call(body), _channel(base_url=base_url, headers={"x-a": "1"}))
    assert request.url == url and request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-a"] == "1"


def test_the_body_has_v2_fields_only_with_the_upstream_model() -> None:
    body = {
        "model": "alias", "query": "capital?", "documents": ["a", {"text": "b"}],
        "top_n": 3, "return_documents": True, "max_chunks_per_doc": 4,
        "max_tokens_per_doc": 512, "user": "u1",
    }  # fmt: skip
    sent = orjson.loads(ADAPTER.build_request(_call(body), _channel()).body)
    assert sent == {
        "model": "rerank-v3.5", "query": "capital?", "documents": ["a", "b"],
        "top_n": 3, "max_tokens_per_doc": 512,
    }  # fmt: skip


def test_object_documents_become_yaml_strings() -> None:
    assert cohere_document("plain") == "plain"
    assert cohere_document({"text": "only text"}) == "only text"
    assert cohere_document({"text": "t", "title": "T"}) == "text: t\ntitle: T"
    assert cohere_document({"tags": ["a", "b"], "n": 2, "é": "ü"}) == "tags:\n- a\n- b\nn: 2\né: ü"


def test_only_rerank_is_translated() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    chat = RelayCall(
        endpoint="chat", path="/chat/completions", body=body, raw_body=orjson.dumps(body),
        requested_model="m", upstream_model="m", stream=False, client_wants_usage=False,
    )  # fmt: skip
    with pytest.raises(InvalidRequest) as raised:
        ADAPTER.build_request(chat, _channel())
    assert raised.value.code == "unsupported_endpoint"


def test_an_answer_keeps_results_id_and_billed_units() -> None:
    answer = {
        "id": "abc", "results": [{"index": 1, "relevance_score": 0.9}],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 3}},
    }  # fmt: skip
    body = {"model": "rr", "query": "q", "documents": ["a", "b"]}
    parsed = ADAPTER.parse_response(_call(body), orjson.dumps(answer))
    assert orjson.loads(parsed.body) == answer
    assert parsed.usage is None  # tokens: counted by the rerank spec


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"id": "x"}', b'{"results": {}}'])
def test_an_answer_without_results_is_a_bad_response(raw: bytes) -> None:
    body = {"model": "rr", "query": "q", "documents": ["a"]}
    with pytest.raises(UpstreamBadResponse):
        ADAPTER.parse_response(_call(body), raw)


@pytest.mark.parametrize(
    ("status", "kind", "client_status", "code"),
    [(400, "client", 400, None), (422, "client", 400, None),
     (401, "auth", 502, "upstream_auth_failed"), (498, "auth", 502, "upstream_auth_failed"),
     (402, "billing", 502, "upstream_billing_error"),
     (429, "rate_limit", 429, "upstream_rate_limited"), (499, "server", 502, "upstream_error"),
     (500, "server", 502, "upstream_error"), (503, "server", 502, "upstream_error"),
     (504, "timeout", 504, "upstream_timeout")],
)  # fmt: skip
def test_errors_are_classified_from_the_status_and_message(
    status: int, kind: str, client_status: int, code: str | None
) -> None:
    body = orjson.dumps({"message": f"went wrong with key {SECRET}"})
    failure = ADAPTER.parse_error(status, {"retry-after": "2"}, body, secret=SECRET)
    assert (failure.kind, failure.status, failure.code) == (kind, client_status, code)
    assert SECRET not in failure.message
    if kind == "client":
        assert failure.message == "went wrong with key [redacted]"
    if kind == "rate_limit":
        assert failure.retry_after_s == 2.0


def test_an_error_body_that_is_not_cohere_shaped_still_classifies() -> None:
    failure = ADAPTER.parse_error(400, {}, b"<html>bad gateway</html>")
    assert (failure.status, failure.message) == (400, "upstream returned HTTP 400")


def test_a_stream_is_never_opened_but_would_fail_cleanly() -> None:
    body = {"model": "rr", "query": "q", "documents": ["a"]}
    translator = ADAPTER.stream_translator(_call(body))
    assert translator.feed(b"data: {}\n\n") == [] and translator.close() == []
    assert translator.failure is not None and translator.usage is None
