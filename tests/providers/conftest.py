"""Fixtures shared by the provider tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.support import LoopThread


@pytest.fixture
def fake_anthropic(loop_thread: LoopThread) -> Iterator[FakeAnthropic]:
    """A fresh fake Anthropic API; the test fails if Sluice sent it anything the real one
    would reject."""
    fake = loop_thread.run(FakeAnthropic().start())
    yield fake
    loop_thread.run(fake.stop())
    assert not fake.violations, fake.violations
