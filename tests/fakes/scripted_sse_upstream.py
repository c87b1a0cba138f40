"""A fake upstream that plays a fixed SSE script, whatever the provider's path.

Each step is ``(delay_s, bytes)``: wait, then write. The steps are the provider's own wire
format, built by the test (OpenAI, Azure, Anthropic or Gemini events), so one fake serves every
stream translator. It records whether each stream was played to its end or cut by the gateway,
which is what the disconnect-billing tests need: an upstream that keeps generating after the
client has gone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.server import serve_on_loopback

__all__ = ["ScriptedSse", "Step"]

Step = tuple[float, bytes]


@dataclass
class ScriptedSse:
    script: list[Step] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    completed: int = 0  # streams played to their last step
    disconnects: int = 0  # streams the gateway closed before the end
    port: int = 0
    _runner: web.AppRunner | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ScriptedSse:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._play)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        self._released.set()  # a step waiting for an hour ends now
        if self._runner is not None:
            await self._runner.cleanup()

    async def _play(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.paths.append(request.path)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        try:
            await response.prepare(request)
            for delay_s, data in self.script:
                if delay_s:
                    try:
                        await asyncio.wait_for(self._released.wait(), delay_s)
                        return response
                    except TimeoutError:
                        pass
                await response.write(data)
            await response.write_eof()
            self.completed += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
