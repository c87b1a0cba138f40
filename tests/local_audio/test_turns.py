"""The engines' lock is granted in the order it was asked for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sluice.local_audio.turns import Turns


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_released_turn_goes_to_the_longest_waiter_not_back_to_the_holder() -> None:
    turns = Turns()
    order: list[str] = []

    def take(name: str) -> None:
        with turns:
            order.append(name)

    turns.__enter__()
    waiters = []
    for index, name in enumerate(["b", "c", "d"]):
        waiter = threading.Thread(target=take, args=(name,))
        waiter.start()
        waiters.append(waiter)
        queued = index + 2  # tickets taken: the holder's and each waiter's so far
        wait_until(lambda: turns._next_ticket == queued)  # noqa: B023 (used at once)
    turns.__exit__(None, None, None)
    take("a again")  # a plain Lock would very likely let this barge in first
    for waiter in waiters:
        waiter.join(5)
    assert order == ["b", "c", "d", "a again"]


def test_a_turn_is_given_back_when_its_holder_raises() -> None:
    turns = Turns()
    try:
        with turns:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    done = threading.Event()

    def take() -> None:
        with turns:
            done.set()

    threading.Thread(target=take).start()
    assert done.wait(5)
