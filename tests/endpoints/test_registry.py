"""The endpoint registry and a spec-driven relay, against the in-memory upstream (fast tier).

A spec alone decides what is validated, reserved, metered and billed: a made-up "counter"
endpoint priced per result is admitted, reserved at its worst case, billed for what came back,
and refused before any upstream call when the reservation does not fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.core import MeteredUnits
from sluice.endpoints import EndpointRegistry, EndpointSpec, default_specs
from sluice.endpoints.spec import Estimate, EstimateInput, MeterInput
from sluice.protocol.validate import RequestView, model_field, optional_int, simple_view
from sluice.upstream_mock import MockReply
from tests.mock_gateway import MODEL, answer, completion, mock_gateway

PRICE_USD = 0.001  # per result


def _validate(body: dict[str, Any]) -> RequestView:
    optional_int(body, "n", 1, 10)
    return simple_view("counter", model_field(body))


def _worst_case(given: EstimateInput) -> Estimate:
    return Estimate(units=MeteredUnits(calls=int(given.body.get("n") or 1)))


def _results(given: MeterInput) -> MeteredUnits:
    return MeteredUnits(calls=len(given.response["data"]))


COUNTER = EndpointSpec(
    name="counter",
    paths=("/v1/counter",),
    upstream_path="/counter",
    validate=_validate,
    estimate=_worst_case,
    units=_results,
)
PRICING = {"overrides": {MODEL: {"input": 1.0, "output": 2.0, "per_call": PRICE_USD}}}


def test_registry_refuses_two_specs_with_one_name_or_one_route() -> None:
    chat = EndpointRegistry.of(default_specs())["chat"]
    with pytest.raises(ValueError, match="named 'chat'"):
        EndpointRegistry.of([chat, chat])
    twin = EndpointSpec(name="twin", paths=chat.paths[:1], upstream_path="/x",
                        validate=chat.validate, estimate=chat.estimate)  # fmt: skip
    with pytest.raises(ValueError, match="reuses the route"):
        EndpointRegistry.of([chat, twin])


def test_the_text_families_are_specs() -> None:
    registry = EndpointRegistry.of(default_specs())
    paths = {path: spec.name for spec in registry for path in spec.paths}
    routes = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations")
    names = ["chat", "completions", "embeddings", "moderations"]
    assert [paths[route] for route in routes] == names


async def test_a_spec_is_forwarded_reserved_and_billed_per_result(tmp_path: Path) -> None:
    async with mock_gateway(tmp_path, [*default_specs(), COUNTER], pricing=PRICING) as gateway:
        gateway.routes["a"] = answer(MockReply(200, orjson.dumps({"data": [1, 2, 3]})))
        headers = {"authorization": f"Bearer {gateway.key}"}
        response = await gateway.client.post(
            "/v1/counter", json={"model": MODEL, "n": 5}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"data": [1, 2, 3]}
        [sent] = gateway.upstream.requests
        assert sent.url == "http://a.mock/v1/counter"
        assert orjson.loads(sent.body) == {"model": MODEL, "n": 5}
        [row] = await gateway.usage_rows()
        assert (row["endpoint"], row["calls"], row["prompt_tokens"]) == ("counter", 3, 0)
        assert row["cost_micro"] == 3 * round(PRICE_USD * 1_000_000)


async def test_the_worst_case_is_reserved_before_any_upstream_call(tmp_path: Path) -> None:
    async with mock_gateway(tmp_path, [*default_specs(), COUNTER], pricing=PRICING) as gateway:
        key = (await gateway.state.keys.create("tight", budget_micro=4_500)).secret
        gateway.routes["a"] = answer(MockReply(200, orjson.dumps({"data": [1]})))
        headers = {"authorization": f"Bearer {key}"}
        refused = await gateway.client.post(
            "/v1/counter", json={"model": MODEL, "n": 5}, headers=headers
        )
        assert refused.status_code == 429 and gateway.upstream.requests == []
        assert refused.json()["error"]["code"] == "insufficient_quota"
        served = await gateway.client.post(
            "/v1/counter", json={"model": MODEL, "n": 4}, headers=headers
        )
        assert served.status_code == 200, served.text
        invalid = await gateway.client.post(
            "/v1/counter", json={"model": MODEL, "n": 11}, headers=headers
        )
        assert (invalid.status_code, invalid.json()["error"]["param"]) == (400, "n")


async def test_channels_narrowed_to_other_endpoints_are_not_asked(tmp_path: Path) -> None:
    async with mock_gateway(
        tmp_path, [*default_specs(), COUNTER], {"endpoints": ["chat"]}, pricing=PRICING
    ) as gateway:
        headers = {"authorization": f"Bearer {gateway.key}"}
        response = await gateway.client.post("/v1/counter", json={"model": MODEL}, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "unsupported_endpoint"
        assert gateway.upstream.requests == []
        gateway.routes["a"] = answer(MockReply(200, completion()))
        assert (await gateway.chat()).status_code == 200  # chat still reaches them
