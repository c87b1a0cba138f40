"""The rerank spec's pure parts: the reservation's worst case and the answer reshaped from each
upstream's variant (bad answers refused, so another channel is tried)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.core import MeteredUnits
from sluice.endpoints.rerank import RERANK_SPECS, validate_rerank
from sluice.endpoints.spec import Estimate, EstimateInput, MeterInput
from sluice.errors import UpstreamBadResponse
from sluice.metering.tokens import TokenCounter

SPEC = RERANK_SPECS[0]
TOKENS = TokenCounter()
BODY: dict[str, Any] = {"model": "rr", "query": "q", "documents": ["a", "b", {"text": "c"}]}


def _estimate(body: dict[str, Any]) -> Estimate:
    given = EstimateInput(body, validate_rerank(body), TOKENS, 4096, None)
    return SPEC.estimate(given)


def _reshape(answer: Any, body: dict[str, Any] = BODY, local_tokens: int = 7) -> dict[str, Any]:
    assert SPEC.reshape is not None
    given = MeterInput(body, validate_rerank(body), answer, Estimate(prompt_tokens=local_tokens))
    parsed = SPEC.reshape(given)
    shaped: dict[str, Any] = orjson.loads(parsed.body)
    assert parsed.usage is not None and parsed.usage.units is not None
    assert parsed.usage.prompt == shaped["usage"]["prompt_tokens"]
    assert parsed.usage.units.search_units == shaped["meta"]["billed_units"]["search_units"]
    return shaped


def test_the_estimate_counts_the_query_once_per_document() -> None:
    query = TOKENS.count_text("what is the capital of france")
    docs = ["Paris is the capital.", "Bananas."]
    estimate = _estimate(
        {"model": "m", "query": "what is the capital of france", "documents": docs}
    )
    # Each pair also has a cross-encoder's separators (4 for XLM-R rerankers).
    assert estimate.prompt_tokens == sum(query + TOKENS.count_text(d) + 4 for d in docs)
    assert estimate.units == MeteredUnits(search_units=1)


@pytest.mark.parametrize(
    ("documents", "units"),
    [(["short"] * 100, 1), (["short"] * 101, 2), (["word " * 1_000] * 100, 3)],
)
def test_the_reserved_search_units_are_the_worst_chunking(documents: list[str], units: int) -> None:
    # A 1,000-token document is 3 chunks at worst (500 tokens, a quarter's margin): 100 of
    # them are 300 chunks, 3 search units.
    estimate = _estimate({"model": "m", "query": "q", "documents": documents})
    assert estimate.units == MeteredUnits(search_units=units)


def test_an_answer_is_sorted_cut_to_top_n_and_echoes_documents_when_asked() -> None:
    body = {**BODY, "top_n": 2, "return_documents": True}
    answer = {"results": [{"index": 0, "relevance_score": 0.1},
                          {"index": 2, "relevance_score": 0.9},
                          {"index": 1, "relevance_score": 0.5}]}  # fmt: skip
    shaped = _reshape(answer, body)
    assert shaped["results"] == [
        {"index": 2, "relevance_score": 0.9, "document": {"text": "c"}},
        {"index": 1, "relevance_score": 0.5, "document": {"text": "b"}},
    ]
    assert shaped["id"].startswith("rerank-") and shaped["model"] == "rr"
    # Nothing reported: the local count and one unit per started hundred documents.
    assert shaped["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert shaped["meta"] == {"billed_units": {"search_units": 1}}


@pytest.mark.parametrize(
    ("reported", "tokens", "units"),
    [({"usage": {"total_tokens": 40}}, 40, 1),
     ({"usage": {"prompt_tokens": 30, "total_tokens": 40}}, 30, 1),
     ({"meta": {"billed_units": {"search_units": 4}}}, 7, 4),
     ({"meta": {"billed_units": {"search_units": 2, "input_tokens": 12}}}, 12, 2),
     ({"usage": {"total_tokens": -1}, "meta": {"billed_units": {"search_units": "x"}}}, 7, 1)],
)  # fmt: skip
def test_reported_figures_win_over_computed_ones(
    reported: dict[str, Any], tokens: int, units: int
) -> None:
    shaped = _reshape({"id": "up-1", "results": [], **reported})
    assert shaped["id"] == "up-1" and shaped["results"] == []
    assert (shaped["usage"]["prompt_tokens"], shaped["meta"]["billed_units"]["search_units"]) == (
        tokens,
        units,
    )


@pytest.mark.parametrize(
    "answer",
    [[], {"data": []}, {"results": {}}, {"results": [1]},
     {"results": [{"index": 3, "relevance_score": 0.1}]},
     {"results": [{"index": -1, "relevance_score": 0.1}]},
     {"results": [{"index": 0, "relevance_score": 0.1}, {"index": 0, "relevance_score": 0.2}]},
     {"results": [{"index": 0}]}, {"results": [{"index": 0, "relevance_score": "high"}]},
     {"results": [{"index": True, "relevance_score": 0.1}]}],
)  # fmt: skip
def test_an_answer_that_is_not_a_ranking_of_the_documents_sent_is_refused(answer: Any) -> None:
    with pytest.raises(UpstreamBadResponse):
        _reshape(answer)
