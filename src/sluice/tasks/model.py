"""The neutral shapes of the tasks subsystem: a stored task, and what an upstream says of one.

Protocol modules (``providers/midjourney.py``, ``providers/suno.py``, ``providers/videos.py``)
turn their wire format into a ``Snapshot`` and a stored ``TaskRow`` back into their wire format;
the store, the poller and settlement see only these types.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from sluice.core import MeteredUnits

__all__ = [
    "Accepted",
    "FINAL_STATES",
    "Snapshot",
    "SubmitRefused",
    "TaskRow",
    "TaskState",
    "new_task_id",
]

# submitted: accepted upstream, not started; in_progress: running (progress 0..100);
# success / failure / cancelled: final, settled exactly once (``TaskStore.finish``).
TaskState = Literal["submitted", "in_progress", "success", "failure", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"success", "failure", "cancelled"})


def new_task_id(kind: str) -> str:
    """Sluice's own task id: unrelated to the upstream's, unguessable (>= 62 random bits).

    Midjourney clients expect a decimal string (midjourney-proxy's ids are), Suno clients any
    string, OpenAI's SDK ``video_…``."""
    if kind == "midjourney":
        return str(10**18 + secrets.randbelow(9 * 10**18))
    if kind == "video":
        return "video_" + secrets.token_hex(16)
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An upstream's view of a task, from a poll, a callback or the submit answer."""

    state: TaskState
    progress: int = 0  # percent
    # The upstream's task object in its own protocol (result URLs, buttons, clips, ...). It is
    # what the protocol module renders for clients, with Sluice's ids put in place of upstream ids.
    result: dict[str, Any] = field(default_factory=dict)
    fail_reason: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class Accepted:
    """The upstream took a submission: its own id for the task, and the task's first state."""

    upstream_id: str
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class SubmitRefused:
    """The upstream declined a submission: ``retry`` on another channel, or the client's answer."""

    code: int  # protocol code for the client (Midjourney's 4/21/22/23/24; HTTP-ish for others)
    description: str
    retry: bool  # the channel cannot take it now (queue full, down): try the next channel


@dataclass(slots=True)
class TaskRow:
    id: str
    key_id: str
    kind: str  # "midjourney" | "suno" | "video"
    action: str  # protocol action: IMAGINE, UPSCALE, MUSIC, LYRICS, CREATE, ...
    mode: str | None  # Midjourney speed mode: fast / relax / turbo
    model: str  # the priced name: mj-fast-imagine, suno-music, sora-2
    channel: str
    upstream_id: str  # never shown to clients
    state: str
    progress: int
    request: dict[str, Any]  # what the client submitted (prompt, notifyHook, ...)
    result: dict[str, Any]
    fail_reason: str | None
    reserved_micro: int
    cost_micro: int | None
    units: int  # what was priced: 1 call, or seconds of video
    created_at: float
    updated_at: float
    finished_at: float | None = None
    started_at: float | None = None
    callback_url: str | None = None
    callback_secret: str = ""
    notified: str = ""  # the last status a client callback was sent for

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.created_at


def metered_units(kind: str, units: int) -> MeteredUnits:
    """What a task of ``kind`` is priced by: seconds of video, else one call per task."""
    if kind == "video":
        return MeteredUnits(video_seconds=units)
    return MeteredUnits(calls=units)
