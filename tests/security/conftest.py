"""Fixtures shared by the security suite: the scale suite's PostgreSQL database (a fresh one per
test, for the migration tests) and scripted upstreams started on the test loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.scale import conftest as _scale
from tests.security.scripted_upstream import Handler, ScriptedUpstream
from tests.support import LoopThread

pg_url = _scale.pg_url

Make = Callable[[Handler], ScriptedUpstream]


@pytest.fixture
def scripted(loop_thread: LoopThread) -> Iterator[Make]:
    """Start upstreams that answer with a test's handler; all stopped after the test."""
    started: list[ScriptedUpstream] = []

    def make(handler: Handler) -> ScriptedUpstream:
        upstream = loop_thread.run(ScriptedUpstream(handler).start())
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        loop_thread.run(upstream.stop())
