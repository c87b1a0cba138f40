"""``POST /v1/rerank`` end to end over HTTP (no SDK speaks it): on an OpenAI-compatible channel
(vLLM-style and llama.cpp-style answers) and on a Cohere channel (v2 API), one answer shape
whatever the channel, metered per search unit or per token, with budgets, validation, routing
and failover like every other endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.cohere_upstream import FakeCohere, relevance
from tests.fakes.openai_upstream import FakeOpenAI, Scripted
from tests.support import ADMIN_KEY, Gateway, LoopThread

# OpenAI's spec has no rerank: this is the shape Sluice promises (src/sluice/endpoints/rerank.py).
RERANK_RESPONSE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "model", "results", "usage", "meta"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "model": {"type": "string"},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["index", "relevance_score"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "relevance_score": {"type": "number"},
                    "document": {"type": "object"},
                },
            },
        },
        "usage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["prompt_tokens", "total_tokens"],
            "properties": {
                "prompt_tokens": {"type": "integer", "minimum": 0},
                "total_tokens": {"type": "integer", "minimum": 0},
            },
        },
        "meta": {
            "type": "object",
            "required": ["billed_units"],
            "properties": {
                "billed_units": {
                    "type": "object",
                    "required": ["search_units"],
                    "properties": {"search_units": {"type": "integer", "minimum": 0}},
                }
            },
        },
    },
}

MODEL = "rerank-v3.5"  # Cohere's; priced per search unit in the shipped table ($0.002)
SEARCH_UNIT_MICRO = 2_000
TOKEN_PRICE_USD = 100.0  # per 1M tokens on the compatible channel: 100 micro-dollars a token
QUERY = "capital of france"
DOCUMENTS = [
    "Berlin is the capital of Germany.",
    "Paris is the capital of France.",
    "The Eiffel Tower is in Paris, France.",
    "Bananas are yellow.",
    "France borders Spain; its capital is large.",
]
UPSTREAM_KEY = "sk-compatible-upstream-SECRET-0123456789"


@pytest.fixture
def fake_cohere(loop_thread: LoopThread) -> Iterator[FakeCohere]:
    fake = loop_thread.run(FakeCohere().start())
    yield fake
    loop_thread.run(fake.stop())
    assert not fake.violations, fake.violations


def _cohere(fake: FakeCohere, **extra: Any) -> dict[str, Any]:
    return {"name": "cohere", "type": "cohere", "base_url": fake.base_url,
            "api_key": fake.api_key, "models": [MODEL], **extra}  # fmt: skip


def _compatible(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    # A vLLM server hosting a cross-encoder under its own name.
    return {"name": "vllm", "type": "openai-compatible", "base_url": fake.base_url,
            "api_key": UPSTREAM_KEY, "models": [MODEL],
            "model_map": {MODEL: "bge-reranker-v2-m3"}, **extra}  # fmt: skip


def _gateway(factory: GatewayFactory, channels: list[dict[str, Any]]) -> Gateway:
    pricing = {"overrides": {"bge-reranker-*": {"input": TOKEN_PRICE_USD}}}
    return factory(channels, pricing=pricing)


def _rerank(gateway: Gateway, key: str, path: str = "/v1/rerank", **body: Any) -> httpx.Response:
    root = gateway.base_url.removesuffix("/v1")
    payload = {"model": MODEL, "query": QUERY, "documents": DOCUMENTS, **body}
    return httpx.post(
        root + path, json=payload, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def _expected_order(query: str, documents: list[str]) -> list[int]:
    return sorted(range(len(documents)), key=lambda i: (-relevance(query, documents[i]), i))


def _upstream_tokens(query: str, documents: list[str]) -> int:
    """What the fake compatible upstream reports (tests/fakes/openai_upstream.py)."""
    return sum(3 * (len(query.split()) + len(d.split())) + 1 for d in documents)


@pytest.mark.parametrize("channel", ["vllm", "llamacpp", "cohere"])
def test_rerank_answers_one_shape_and_bills_what_the_upstream_reports(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    fake_cohere: FakeCohere,
    channel: str,
) -> None:
    if channel == "cohere":
        gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
    else:
        fake_openai.rerank_style = channel
        gateway = _gateway(gateway_factory, [_compatible(fake_openai)])
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    response = _rerank(gateway, key, top_n=2, return_documents=True)
    assert response.status_code == 200, response.text
    answer = response.json()
    jsonschema.validate(answer, RERANK_RESPONSE)
    expected = _expected_order(QUERY, DOCUMENTS)[:2]
    assert [r["index"] for r in answer["results"]] == expected
    assert [r["document"] for r in answer["results"]] == [{"text": DOCUMENTS[i]} for i in expected]
    scores = [r["relevance_score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0
    assert answer["model"] == MODEL
    [row] = gateway.usage_rows(key)
    name = "cohere" if channel == "cohere" else "vllm"
    assert (row["endpoint"], row["status"], row["channel"]) == ("rerank", 200, name)
    assert row["search_units"] == answer["meta"]["billed_units"]["search_units"] == 1
    assert row["prompt_tokens"] == answer["usage"]["prompt_tokens"] > 0
    if channel == "cohere":
        [sent] = fake_cohere.received
        # v2 fields only: no return_documents (v2 never echoes documents), model as named.
        assert sent == {"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": 2}
        assert row["cost_micro"] == SEARCH_UNIT_MICRO  # tokens are free for rerank-v3.5
    else:
        [sent_raw] = fake_openai.received
        assert sent_raw.path == "/v1/rerank"
        assert sent_raw.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert sent_raw.body == {"model": "bge-reranker-v2-m3", "query": QUERY,
                                 "documents": DOCUMENTS, "top_n": 2,
                                 "return_documents": True}  # fmt: skip
        # The upstream's own token count is billed, not the local estimate.
        assert row["prompt_tokens"] == _upstream_tokens(QUERY, DOCUMENTS)
        assert row["cost_micro"] == row["prompt_tokens"] * round(TOKEN_PRICE_USD)
    assert gateway.key_record(key).spent_micro == row["cost_micro"]


@pytest.mark.parametrize("channel", ["vllm", "llamacpp", "cohere"])
def test_without_top_n_every_document_is_ranked_and_none_is_echoed_by_default(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    fake_cohere: FakeCohere,
    channel: str,
) -> None:
    if channel == "cohere":
        gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
    else:
        fake_openai.rerank_style = channel
        gateway = _gateway(gateway_factory, [_compatible(fake_openai)])
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    response = _rerank(gateway, key)
    assert response.status_code == 200, response.text
    answer = response.json()
    jsonschema.validate(answer, RERANK_RESPONSE)
    assert [r["index"] for r in answer["results"]] == _expected_order(QUERY, DOCUMENTS)
    assert all("document" not in r for r in answer["results"])


def test_object_documents_reach_cohere_as_text_or_yaml_and_come_back_as_sent(
    gateway_factory: GatewayFactory, fake_cohere: FakeCohere
) -> None:
    gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    documents = [
        {"text": "Paris is the capital of France."},
        {"title": "Germany", "body": "Berlin is its capital."},
        "Bananas are yellow.",
    ]
    response = _rerank(gateway, key, documents=documents, return_documents=True)
    assert response.status_code == 200, response.text
    [sent] = fake_cohere.received
    assert sent["documents"] == [
        "Paris is the capital of France.",
        "title: Germany\nbody: Berlin is its capital.",
        "Bananas are yellow.",
    ]
    results = response.json()["results"]
    assert results[0] == {"index": 0, "relevance_score": 1.0, "document": documents[0]}
    assert {r["index"]: r["document"] for r in results}[1] == documents[1]
    assert {r["index"]: r["document"] for r in results}[2] == {"text": "Bananas are yellow."}


def test_object_documents_are_forwarded_as_is_to_a_compatible_upstream(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = _gateway(gateway_factory, [_compatible(fake_openai)])
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    documents: list[Any] = [{"text": "Paris"}, {"image": "https://img.example/x.png"}]
    response = _rerank(gateway, key, documents=documents, max_chunks_per_doc=3)
    assert response.status_code == 200, response.text
    [sent] = fake_openai.received
    assert sent.body["documents"] == documents and sent.body["max_chunks_per_doc"] == 3


def test_cohere_search_units_are_billed_as_cohere_counts_them(
    gateway_factory: GatewayFactory, fake_cohere: FakeCohere
) -> None:
    """100 documents, one of them long enough to be two chunks: Cohere bills 2 search units
    where counting documents alone would give 1."""
    gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    documents = [f"document number {i}" for i in range(99)] + ["france " * 500]
    response = _rerank(gateway, key, documents=documents, top_n=3)
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["billed_units"]["search_units"] == 2
    [row] = gateway.usage_rows(key)
    assert (row["search_units"], row["cost_micro"]) == (2, 2 * SEARCH_UNIT_MICRO)


def test_without_a_reported_figure_search_units_are_one_per_started_hundred_documents(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> None:
    gateway = gateway_factory(
        [_compatible(fake_openai)],
        pricing={"overrides": {"bge-reranker-*": {"per_search_unit": 0.001}}},
    )
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    documents = [f"doc {i} about france" for i in range(201)]
    response = _rerank(gateway, key, documents=documents, top_n=1)
    assert response.status_code == 200, response.text
    [row] = gateway.usage_rows(key)
    assert (row["search_units"], row["cost_micro"]) == (3, 3 * 1_000)


@pytest.mark.parametrize("channel", ["vllm", "cohere"])
def test_a_budget_below_the_worst_case_is_refused_before_the_upstream_is_asked(
    gateway_factory: GatewayFactory,
    fake_openai: FakeOpenAI,
    fake_cohere: FakeCohere,
    channel: str,
) -> None:
    if channel == "cohere":
        gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
        budget = SEARCH_UNIT_MICRO - 1  # one search unit is reserved
    else:
        gateway = _gateway(gateway_factory, [_compatible(fake_openai)])
        budget = 100  # one token at most: the prompt is dozens
    key = gateway.create_key("rerank", budget_micro=budget)
    response = _rerank(gateway, key)
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert fake_cohere.received == [] and fake_openai.received == []


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"query": None}, "query"),
        ({"query": ""}, "query"),
        ({"query": ["a"]}, "query"),
        ({"documents": None}, "documents"),
        ({"documents": []}, "documents"),
        ({"documents": "one doc"}, "documents"),
        ({"documents": ["ok", 7]}, "documents[1]"),
        ({"documents": [None]}, "documents[0]"),
        ({"documents": [{}]}, "documents[0]"),
        ({"top_n": 0}, "top_n"),
        ({"top_n": "2"}, "top_n"),
        ({"return_documents": "yes"}, "return_documents"),
        ({"stream": True}, "stream"),
        ({"model": None}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_reaches_no_upstream(
    gateway_factory: GatewayFactory,
    fake_cohere: FakeCohere,
    change: dict[str, Any],
    param: str,
) -> None:
    gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    payload: dict[str, Any] = {"model": MODEL, "query": QUERY, "documents": DOCUMENTS}
    payload.update(change)
    payload = {k: v for k, v in payload.items() if v is not None}
    response = httpx.post(
        f"{gateway.base_url}/rerank", json=payload, headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert fake_cohere.received == []


@pytest.mark.parametrize("kind", ["anthropic", "openai", "azure", "gemini"])
def test_channel_types_without_rerank_refuse_it_with_unsupported_endpoint(
    gateway_factory: GatewayFactory, kind: str
) -> None:
    # Never contacted: the refusal comes from the type's capabilities.
    channel = {"name": kind, "type": kind, "base_url": "http://127.0.0.1:9",
               "api_key": "k", "models": [MODEL]}  # fmt: skip
    gateway = _gateway(gateway_factory, [channel])
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    response = _rerank(gateway, key)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_endpoint", "model")
    assert "rerank" in error["message"]
    [row] = gateway.usage_rows(key)
    assert (row["status"], row["cost_micro"]) == (400, 0)


def test_a_failing_cohere_channel_fails_over_to_a_compatible_one(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, fake_cohere: FakeCohere
) -> None:
    fake_cohere.script.append((503, b'{"message":"service unavailable"}'))
    gateway = _gateway(
        gateway_factory, [_cohere(fake_cohere, priority=1), _compatible(fake_openai)]
    )
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    response = _rerank(gateway, key, top_n=1, return_documents=True)
    assert response.status_code == 200, response.text
    answer = response.json()
    jsonschema.validate(answer, RERANK_RESPONSE)
    assert answer["results"] == [
        {"index": 1, "relevance_score": 1.0, "document": {"text": DOCUMENTS[1]}}
    ]
    assert len(fake_cohere.received) == 1 and len(fake_openai.received) == 1
    [row] = gateway.usage_rows(key)
    assert (row["channel"], row["status"]) == ("vllm", 200)
    assert row["cost_micro"] == _upstream_tokens(QUERY, DOCUMENTS) * round(TOKEN_PRICE_USD)


def test_cohere_client_errors_pass_through_and_credentials_errors_do_not(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, fake_cohere: FakeCohere
) -> None:
    fake_cohere.script.append((400, b'{"message":"invalid request: query too long"}'))
    gateway = _gateway(
        gateway_factory, [_cohere(fake_cohere, priority=1), _compatible(fake_openai)]
    )
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    response = _rerank(gateway, key)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == "invalid request: query too long"
    assert fake_openai.received == []  # the client's mistake: not tried elsewhere

    bad_key = _gateway(gateway_factory, [_cohere(fake_cohere, api_key="co-wrong-key-000000000")])
    key = bad_key.create_key("rerank", budget_micro=1_000_000)
    response = _rerank(bad_key, key)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_auth_failed"
    assert "co-wrong-key" not in response.text and "invalid api token" not in response.text


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_every_rerank_route_serves_it(
    gateway_factory: GatewayFactory, fake_cohere: FakeCohere, path: str
) -> None:
    gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    response = _rerank(gateway, key, path=path, top_n=1)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["index"] == 1


def test_search_units_reserved_cover_every_chunk_cohere_may_bill(
    gateway_factory: GatewayFactory, fake_cohere: FakeCohere
) -> None:
    """The reservation is the worst case: a key that can pay for the documents but not for
    their chunks is refused (200 documents are 2 search units, but long ones may be billed as
    several each)."""
    gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
    key = gateway.create_key("rerank", budget_micro=2 * SEARCH_UNIT_MICRO)
    documents = ["france " * 1_000] * 200
    response = _rerank(gateway, key, documents=documents)
    assert response.status_code == 429, response.text
    assert fake_cohere.received == []


def test_an_upstream_answer_that_ranks_documents_not_sent_is_failed_over(
    gateway_factory: GatewayFactory, fake_openai: FakeOpenAI, fake_cohere: FakeCohere
) -> None:
    broken = {"results": [{"index": 99, "relevance_score": 1.0}], "usage": {"total_tokens": 5}}
    fake_openai.script.append(Scripted(body=orjson.dumps(broken)))
    gateway = _gateway(
        gateway_factory, [_compatible(fake_openai, priority=1), _cohere(fake_cohere)]
    )
    key = gateway.create_key("rerank", budget_micro=1_000_000)
    response = _rerank(gateway, key, top_n=1)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["index"] == 1
    [row] = gateway.usage_rows(key)
    assert (row["channel"], row["cost_micro"]) == ("cohere", SEARCH_UNIT_MICRO)

    alone = _gateway(gateway_factory, [_compatible(fake_openai)])
    fake_openai.script.append(Scripted(body=orjson.dumps(broken)))
    response = _rerank(alone, alone.create_key("alone", budget_micro=1_000_000))
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "bad_upstream_response"


def test_a_rerank_only_channel_is_probed_with_a_rerank(
    gateway_factory: GatewayFactory, fake_cohere: FakeCohere
) -> None:
    """The channel test and health probes send the smallest request the channel serves: chat
    for most, a one-document rerank for Cohere."""
    gateway = _gateway(gateway_factory, [_cohere(fake_cohere)])
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as admin:
        probe = admin.post("/admin/channels/cohere/test").json()
        assert probe["ok"] is True and probe["model"] == MODEL, probe
        assert fake_cohere.received == [
            {"model": MODEL, "query": "ping", "documents": ["pong"], "top_n": 1}
        ]
        fake_cohere.api_key = "co-rotated-key-0000000000000"  # the channel's key is now stale
        probe = admin.post("/admin/channels/cohere/test").json()
        assert probe["ok"] is False and probe["status"] == 502, probe
