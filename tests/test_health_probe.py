"""Channel probes through the shared channel call (``sluice.channel_call``), on the in-memory
upstream: the same redaction and clean-up as a relayed request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from sluice.core import UpstreamFailure, UpstreamRequest
from sluice.health_probe import _probe, probe_channel
from sluice.routing import Channel
from sluice.upstream import UpstreamUnavailable
from sluice.upstream_mock import MockReply
from tests.mock_gateway import KEY_A, MODEL, MockGateway, answer, completion, mock_gateway


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[MockGateway]:
    async with mock_gateway(tmp_path) as gw:
        yield gw


def channel_a(gateway: MockGateway) -> Channel:
    return next(c for c in gateway.state.router.channels if c.name == "a")


async def test_a_healthy_channel_answers_its_probe(gateway: MockGateway) -> None:
    gateway.routes["a"] = answer(MockReply(200, completion("pong", 5, 1)))
    outcome = await probe_channel(gateway.state, channel_a(gateway), MODEL)
    assert (outcome["ok"], outcome["status"]) == (True, 200)
    (sent,) = gateway.upstream.requests
    assert orjson.loads(sent.body)["max_tokens"] == 1
    assert gateway.upstream.responses[0].closed


async def test_an_auth_failure_is_classified_and_its_key_masked(gateway: MockGateway) -> None:
    leaky = {"error": {"message": f"Incorrect API key provided: {KEY_A}.",
                       "type": "invalid_request_error", "code": "invalid_api_key"}}  # fmt: skip
    gateway.routes["a"] = answer(MockReply(401, orjson.dumps(leaky)))
    outcome, kind = await _probe(gateway.state, channel_a(gateway), MODEL)
    assert outcome["ok"] is False and kind == "auth"
    assert outcome["status"] is not None
    assert KEY_A not in str(outcome) and KEY_A[:20] not in str(outcome)
    assert gateway.upstream.responses[0].closed


async def test_no_answer_has_no_status_and_no_kind(gateway: MockGateway) -> None:
    def unreachable(_request: UpstreamRequest) -> MockReply:
        raise UpstreamUnavailable(
            UpstreamFailure(status=504, kind="timeout", message="The upstream did not answer.")
        )

    gateway.routes["a"] = unreachable
    outcome, kind = await _probe(gateway.state, channel_a(gateway), MODEL)
    assert (outcome["ok"], outcome["status"], kind) == (False, None, None)
    assert outcome["error"] == "The upstream did not answer."
