"""``both_settled``: admission and settlement run two Redis scripts through it; whatever
happens to the caller, both finish and both outcomes come back, so a hold is never orphaned."""

from __future__ import annotations

import asyncio

from sluice.admission.together import both_settled


async def _after(delay_s: float, value: str, done: list[str]) -> str:
    await asyncio.sleep(delay_s)
    done.append(value)
    return value


async def _fails() -> str:
    raise ValueError("script error")


async def test_both_results_come_back() -> None:
    done: list[str] = []
    assert await both_settled(_after(0.01, "a", done), _after(0.02, "b", done)) == ("a", "b")


async def test_an_exception_is_returned_and_the_other_still_runs() -> None:
    done: list[str] = []
    a, b = await both_settled(_fails(), _after(0.01, "held", done))
    assert isinstance(a, ValueError) and b == "held"


async def test_cancelled_while_the_second_runs_it_still_finishes() -> None:
    done: list[str] = []
    caller = asyncio.ensure_future(both_settled(_after(0.0, "a", done), _after(0.1, "held", done)))
    await asyncio.sleep(0.03)  # the first is done; the second (a budget hold) is in flight
    caller.cancel()
    a, b = await caller
    assert isinstance(a, asyncio.CancelledError), "the caller learns it was cancelled"
    assert b == "held" and done == ["a", "held"], "and gets the hold back to undo it"


async def test_cancelled_while_the_first_runs_the_second_still_finishes() -> None:
    done: list[str] = []
    caller = asyncio.ensure_future(both_settled(_after(0.1, "a", done), _after(0.05, "held", done)))
    await asyncio.sleep(0.01)
    caller.cancel()
    a, b = await caller
    assert isinstance(a, asyncio.CancelledError) and b == "held"


async def test_cancelled_twice_it_stops_waiting() -> None:
    done: list[str] = []
    caller = asyncio.ensure_future(both_settled(_after(0.0, "a", done), _after(5.0, "held", done)))
    await asyncio.sleep(0.02)
    caller.cancel()
    await asyncio.sleep(0.02)
    caller.cancel()
    a, b = await asyncio.wait_for(caller, 1)
    assert isinstance(a, asyncio.CancelledError) and isinstance(b, asyncio.CancelledError)
