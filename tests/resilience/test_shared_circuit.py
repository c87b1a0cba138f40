"""Circuit transitions received from another replica are applied to the local breakers."""

from __future__ import annotations

import orjson

from sluice.health import MemoryChannelHealth
from sluice.redis_backend.circuit import CircuitSync
from sluice.settings import CircuitConfig


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _message(channel: str, model: str | None, state: str) -> bytes:
    return orjson.dumps({"origin": "other-replica", "channel": channel, "model": model,
                         "state": state})  # fmt: skip


async def test_remote_open_and_close_are_applied() -> None:
    clock = _Clock()
    announced: list[tuple[str, str | None, str]] = []
    health = MemoryChannelHealth(
        CircuitConfig(cooldown_s=30), clock=clock, on_change=lambda *c: announced.append(c)
    )
    sync = CircuitSync(backend=None)  # type: ignore[arg-type]  # no publishing in this test
    sync.attach(health)
    assert health.available("a", "m")

    await sync.on_message(_message("a", None, "open"))
    assert not health.available("a", "m"), "another replica opened the channel's circuit"
    assert health.available("b", "m")
    clock.now += 31
    assert health.available("a", "m"), "after the cool-down this replica sends its own probe"
    health.record_success("a", "m")  # the probe answered: closed again
    announced.clear()

    await sync.on_message(_message("a", "m2", "open"))
    assert not health.available("a", "m2") and health.available("a", "m")
    await sync.on_message(_message("a", "m2", "closed"))
    assert health.available("a", "m2")
    assert announced == [], "changes learned from others are not re-announced"


async def test_own_messages_are_ignored() -> None:
    health = MemoryChannelHealth(CircuitConfig())
    sync = CircuitSync(backend=None)  # type: ignore[arg-type]  # no publishing in this test
    sync.attach(health)
    await sync.on_message(
        orjson.dumps({"origin": sync.origin, "channel": "a", "model": None, "state": "open"})
    )
    assert health.available("a", "m")
