"""A fake Azure OpenAI upstream: the fake OpenAI server behind Azure's addressing.

Azure differs from OpenAI only in how a request is addressed, so this fake checks exactly that
(``/openai/deployments/{deployment}/…``, an ``api-version`` query parameter, the key in an
``api-key`` header and no ``Authorization`` header) and answers 401/404 the way Azure does
when it is wrong; bodies and streams are then produced by ``FakeOpenAI``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import serve_on_loopback

__all__ = ["FakeAzure", "AZURE_KEY", "DEPLOYMENTS"]

AZURE_KEY = "azure-FAKE-key-0123456789abcdef-do-not-leak"
# Deployments that exist on this fake resource.
DEPLOYMENTS = {"test-deployment", "test-truncate", "test-vision-private", "test-embed"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _azure_error(status: int, code: str, message: str) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json")


class FakeAzure(FakeOpenAI):
    def __init__(self) -> None:
        super().__init__()
        self.violations: list[str] = []
        self.deployments_called: list[str] = []
        self.api_versions: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeAzure:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        base = "/openai/deployments/{deployment}"
        app.router.add_post(base + "/chat/completions", self._guard(self._chat))
        app.router.add_post(base + "/completions", self._guard(self._completions))
        app.router.add_post(base + "/embeddings", self._guard(self._embeddings))
        # The v1 API (Responses): one path, the deployment named by the body's model.
        app.router.add_post("/openai/v1/responses", self._v1_responses)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def _v1_responses(self, request: web.Request) -> web.StreamResponse:
        if "authorization" in request.headers:
            self.violations.append("Authorization header sent to Azure")
        if request.headers.get("api-key") != AZURE_KEY:
            return _azure_error(401, "401", "Access denied due to invalid subscription key.")
        model = orjson.loads(await request.read()).get("model")
        if model not in DEPLOYMENTS:
            return _azure_error(404, "DeploymentNotFound", "The API deployment does not exist.")
        self.deployments_called.append(model)
        return await self._responses(request)

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            deployment = request.match_info["deployment"]
            version = request.query.get("api-version")
            if not version:
                self.violations.append("missing api-version")
                return _azure_error(404, "404", "Resource not found")
            if "authorization" in request.headers:
                self.violations.append("Authorization header sent to Azure")
            if request.headers.get("api-key") != AZURE_KEY:
                return _azure_error(
                    401, "401", "Access denied due to invalid subscription key or wrong API "
                    "endpoint.",
                )  # fmt: skip
            if deployment not in DEPLOYMENTS:
                return _azure_error(
                    404, "DeploymentNotFound", "The API deployment for this resource does not "
                    "exist.",
                )  # fmt: skip
            self.deployments_called.append(deployment)
            self.api_versions.append(version)
            return await handler(request)

        return guarded
