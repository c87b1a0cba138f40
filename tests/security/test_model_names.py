"""Model names that could leave their URL path segment are refused with a 400 before any
upstream URL is built: no request reaches the upstream, whatever the channel type."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from sluice.cli import main as cli_main
from tests.conftest import GatewayFactory
from tests.fakes.server import serve_on_loopback
from tests.support import Gateway, LoopThread, make_settings, start_gateway

CHANNEL_TYPES = ["openai-compatible", "azure", "gemini", "anthropic"]
PATH_TYPES = {"azure", "gemini"}  # providers that put the model in the URL path

# Refused at admission, for every channel type.
NEVER_VALID = [
    "../../v1/files",
    "..",
    ".",
    "a/../b",
    "a/./b",
    "models/../../v1/files",
    "gemini-pro:generateContent?x=",
    "%2e%2e",
    "%2e%2e%2fv1%2ffiles",
    "x#fragment",
    "..\\..\\v1\\files",
]
# Fine in a JSON body (vLLM, Ollama names), refused where the name becomes a path segment.
BODY_ONLY = ["meta-llama/Llama-3-8B", "a/b/c", "models/a/b"]


class Sink:
    """An upstream that records every request it gets, on any path, and answers 400."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Sink:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self.runner, self.port = await serve_on_loopback(app)
        return self

    async def _record(self, request: web.Request) -> web.Response:
        self.received.append(f"{request.method} {request.raw_path}")
        error = {"error": {"message": "sink", "type": "invalid_request_error", "code": "sink"}}
        return web.json_response(error, status=400)


@pytest.fixture(scope="module")
def sink(loop_thread: LoopThread) -> Iterator[Sink]:
    sink = loop_thread.run(Sink().start())
    yield sink
    assert sink.runner is not None
    loop_thread.run(sink.runner.cleanup())


@pytest.fixture(scope="module", params=CHANNEL_TYPES)
def channel_gateway(
    request: pytest.FixtureRequest,
    loop_thread: LoopThread,
    sink: Sink,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Gateway, str]]:
    kind: str = request.param
    base = f"http://127.0.0.1:{sink.port}" + ("/v1" if kind == "openai-compatible" else "")
    channel = {"name": "c", "type": kind, "base_url": base, "api_key": "k", "models": ["*"]}
    settings = make_settings(
        tmp_path_factory.mktemp(kind), [channel], pricing={"unpriced_policy": "free"}
    )
    gateway = start_gateway(loop_thread, settings)
    try:
        yield kind, gateway, gateway.create_key("names")
    finally:
        gateway.stop()


def _chat(gateway: Gateway, key: str, model: str, stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {
        "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
        "stream": stream,
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers)


def _assert_refused(response: httpx.Response, sink: Sink) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "model" and error["code"] == "invalid_model_name", error
    assert error["type"] == "invalid_request_error"
    assert sink.received == []


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", NEVER_VALID)
def test_never_valid_names_are_refused_before_any_upstream_call(
    channel_gateway: tuple[str, Gateway, str], sink: Sink, model: str, stream: bool
) -> None:
    _, gateway, key = channel_gateway
    sink.received.clear()
    _assert_refused(_chat(gateway, key, model, stream), sink)


@pytest.mark.parametrize("model", BODY_ONLY)
def test_names_with_a_slash_never_reach_a_url_path(
    channel_gateway: tuple[str, Gateway, str], sink: Sink, model: str
) -> None:
    kind, gateway, key = channel_gateway
    sink.received.clear()
    response = _chat(gateway, key, model)
    if kind in PATH_TYPES:
        _assert_refused(response, sink)
    else:
        assert len(sink.received) == 1, response.text  # a body field only: relayed as is


def test_an_ordinary_name_reaches_the_upstream(
    channel_gateway: tuple[str, Gateway, str], sink: Sink
) -> None:
    """The control: the same gateway does contact the sink for a plain name."""
    kind, gateway, key = channel_gateway
    sink.received.clear()
    _chat(gateway, key, "good-model-1.5")
    assert len(sink.received) == 1
    if kind in PATH_TYPES:
        assert "/good-model-1.5" in sink.received[0]


def test_gemini_embeddings_are_guarded_too(
    channel_gateway: tuple[str, Gateway, str], sink: Sink
) -> None:
    kind, gateway, key = channel_gateway
    if kind not in PATH_TYPES:
        pytest.skip("the model is a body field for this channel type")
    sink.received.clear()
    response = httpx.post(
        f"{gateway.base_url}/embeddings",
        json={"model": "org/embedder", "input": "hi"},
        headers={"Authorization": f"Bearer {key}"},
    )
    _assert_refused(response, sink)


@pytest.mark.parametrize("kind", sorted(PATH_TYPES))
@pytest.mark.parametrize("target", ["../x", "a/b", ".", "dep?x=1", "%2e%2e"])
def test_a_model_map_target_cannot_leave_its_segment(
    gateway_factory: GatewayFactory, sink: Sink, kind: str, target: str
) -> None:
    """The operator's model_map is checked the same way, and its target is not disclosed."""
    channel = {"name": "c", "type": kind, "base_url": f"http://127.0.0.1:{sink.port}",
               "api_key": "k", "models": [], "model_map": {"alias": target}}  # fmt: skip
    gateway = gateway_factory([channel], pricing={"unpriced_policy": "free"})
    sink.received.clear()
    response = _chat(gateway, gateway.create_key(), "alias")
    _assert_refused(response, sink)
    assert len(target) < 3 or target not in response.json()["error"]["message"]


def test_config_check_reports_model_map_targets_that_are_not_a_segment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sluice.yaml"
    channels = [
        {"name": "az", "type": "azure", "base_url": "http://127.0.0.1:1",
         "model_map": {"ok": "prod-deployment", "bad": "../x"}},
        {"name": "gm", "type": "gemini", "base_url": "http://127.0.0.1:1",
         "model_map": {"ok": "models/gemini-2.0-flash", "bad": "tuned/a/b"}},
        {"name": "vllm", "type": "openai-compatible", "base_url": "http://127.0.0.1:1/v1",
         "model_map": {"llama": "meta-llama/Llama-3-8B"}},
    ]  # fmt: skip
    config.write_text(yaml.safe_dump({"channels": channels}))
    assert cli_main(["config", "check", str(config)]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out
    assert "channel az: model_map target '../x'" in out
    assert "channel gm: model_map target 'tuned/a/b'" in out
