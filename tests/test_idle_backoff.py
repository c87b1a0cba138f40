"""The task poller and batch runner look for work less often while they find none, and at
their configured pace again as soon as they find some (or are woken)."""

from __future__ import annotations

from sluice.idle_backoff import IdleBackoff


def test_idle_looks_back_off_to_the_ceiling_and_work_restores_the_pace() -> None:
    backoff = IdleBackoff(1.0, ceiling=5.0)
    assert [backoff.after(False) for _ in range(5)] == [2.0, 4.0, 5.0, 5.0, 5.0]
    assert backoff.after(True) == 1.0
    assert backoff.after(False) == 2.0
    backoff.reset()
    assert backoff.after(True) == 1.0 and backoff.after(False) == 2.0
