"""Channel health: circuit breakers per channel and per channel+model, and disabled channels.

``CircuitBreaker`` holds the state transitions of one breaker and nothing else, so a shared
(Redis) implementation can reuse the same rules. ``MemoryChannelHealth`` is the in-process
``ChannelHealth`` the router consults: a channel is usable when it is not disabled and neither
its own breaker nor its breaker for the requested model refuses.

Rules (docs/reliability.md):
- a breaker opens after ``consecutive_failures`` failures in a row, or when at least
  ``min_requests`` outcomes inside ``window_s`` have an error rate >= ``error_rate``;
- open -> half_open after ``cooldown_s``; half_open lets one probe through; the probe's success
  closes the breaker, its failure re-opens it;
- failures of kind ``client`` are the caller's fault and never count;
- ``auth`` and ``billing`` failures (401/402/403, no credit) may be the channel's or only the
  request's (a model the upstream key's project lacks, a huge ``max_tokens``): they count in
  no breaker, so one tenant cannot take a shared channel down. The relay asks the channel's own
  test request (``health_probe.confirm_soon``, at most one at a time per channel, spaced by
  ``ProbeGate``); only a probe that fails the same way disables the channel, until an admin
  enables it or the periodic health probe succeeds.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sluice.core import FailureKind
from sluice.settings import CircuitConfig

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "DEAD_CHANNEL_KINDS",
    "MemoryChannelHealth",
    "ProbeGate",
    "STATE_CODES",
]

CircuitState = Literal["closed", "open", "half_open", "disabled"]
# Numeric codes for the Prometheus gauge.
STATE_CODES: dict[CircuitState, int] = {"closed": 0, "half_open": 1, "open": 2, "disabled": 3}
# Failures that disable a channel once its own probe confirms them.
DEAD_CHANNEL_KINDS: frozenset[FailureKind] = frozenset({"auth", "billing"})
_MAX_MODEL_BREAKERS = 1_000  # per channel: model names may come from glob patterns

StateListener = Callable[[str, str | None, CircuitState], None]


class CircuitBreaker:
    """One breaker: closed -> open -> half_open -> closed, driven by outcomes and a clock."""

    __slots__ = ("_config", "state", "opened_at", "probe_at", "consecutive", "_window")

    def __init__(self, config: CircuitConfig) -> None:
        self._config = config
        self.state: CircuitState = "closed"
        self.opened_at = 0.0
        self.probe_at: float | None = None  # when the half-open probe was let through
        self.consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()  # (time, failed)

    def allow(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open":
            if now - self.opened_at < self._config.cooldown_s:
                return False
            self.state = "half_open"
            self.probe_at = None
        # half_open: one probe at a time. A probe that never reports back (the router asked but
        # the request went elsewhere) expires after a cool-down so the breaker cannot wedge.
        if self.probe_at is not None and now - self.probe_at < self._config.cooldown_s:
            return False
        self.probe_at = now
        return True

    def peek(self, now: float) -> bool:
        """Would ``allow`` say yes? Without taking the half-open probe."""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now - self.opened_at >= self._config.cooldown_s
        return self.probe_at is None or now - self.probe_at >= self._config.cooldown_s

    def on_success(self, now: float) -> None:
        self._push(now, failed=False)
        self.consecutive = 0
        if self.state == "open":
            return  # a late answer to a request sent before opening: wait for the probe
        if self.state == "half_open":
            self.state = "closed"
            self.probe_at = None
            self._window.clear()  # a fresh start: old errors must not re-open it at once

    def on_failure(self, now: float) -> None:
        self._push(now, failed=True)
        self.consecutive += 1
        if self.state == "half_open" or (self.state == "closed" and self._should_open()):
            self.state = "open"
            self.opened_at = now
            self.probe_at = None

    def force(self, state: CircuitState, now: float) -> None:
        """Adopt a state another replica reached (shared circuit state over Redis)."""
        if state == "open" and self.state != "open":
            self.state, self.opened_at, self.probe_at = "open", now, None
        elif state == "closed" and self.state != "closed":
            self.state, self.probe_at, self.consecutive = "closed", None, 0
            self._window.clear()

    def _should_open(self) -> bool:
        if self.consecutive >= self._config.consecutive_failures:
            return True
        total = len(self._window)
        if total < self._config.min_requests:
            return False
        failures = sum(1 for _, failed in self._window if failed)
        return failures / total >= self._config.error_rate

    def _push(self, now: float, failed: bool) -> None:
        window = self._window
        window.append((now, failed))
        horizon = now - self._config.window_s
        while window and window[0][0] < horizon:
            window.popleft()


class ProbeGate:
    """Which channels a confirmation probe may be sent to now (one worker).

    One probe at a time per channel, and at most one per ``interval_s``: a tenant that provokes
    a 403 on every request must not make Sluice probe (and pay for) a channel at that rate.
    """

    __slots__ = ("_clock", "_busy", "_last")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._busy: set[str] = set()
        self._last: dict[str, float] = {}  # channel -> when its last probe started

    def begin(self, channel: str, interval_s: float) -> bool:
        """True (and the channel is busy until ``end``) when a probe may start now."""
        now = self._clock()
        last = self._last.get(channel)
        if channel in self._busy or (last is not None and now - last < interval_s):
            return False
        self._busy.add(channel)
        self._last[channel] = now
        return True

    def end(self, channel: str) -> None:
        self._busy.discard(channel)


@dataclass(slots=True)
class _Disabled:
    reason: str
    since: float  # wall clock


class _ChannelRecord:
    __slots__ = ("breaker", "models", "recent")

    def __init__(self, config: CircuitConfig) -> None:
        self.breaker = CircuitBreaker(config)
        self.models: dict[str, CircuitBreaker] = {}
        self.recent: deque[tuple[float, FailureKind | None]] = deque()  # for the admin view


class MemoryChannelHealth:
    """In-process ``ChannelHealth``: breakers and disabled channels of one worker."""

    def __init__(
        self,
        config: CircuitConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self._channels: dict[str, _ChannelRecord] = {}
        self._disabled: dict[str, _Disabled] = {}
        self._resting_until: dict[str, float] = {}  # channel -> clock time its Retry-After ends

    def _record(self, channel: str) -> _ChannelRecord:
        record = self._channels.get(channel)
        if record is None:
            record = self._channels[channel] = _ChannelRecord(self._config)
        return record

    def _model_breaker(self, record: _ChannelRecord, model: str) -> CircuitBreaker | None:
        breaker = record.models.get(model)
        if breaker is None and len(record.models) < _MAX_MODEL_BREAKERS:
            breaker = record.models[model] = CircuitBreaker(self._config)
        return breaker

    # --- ChannelHealth protocol ----------------------------------------------------------------

    def available(self, channel: str, model: str) -> bool:
        if channel in self._disabled:
            return False
        record = self._channels.get(channel)
        if record is None:
            return True
        now = self._clock()
        model_breaker = record.models.get(model)
        # Peek at both first so a refusal by one does not burn the other's half-open probe.
        if not record.breaker.peek(now) or (model_breaker and not model_breaker.peek(now)):
            return False
        before = record.breaker.state
        ok = record.breaker.allow(now) and (model_breaker is None or model_breaker.allow(now))
        if before != record.breaker.state:
            self._notify(channel, None, record.breaker.state)
        return ok

    def record_success(self, channel: str, model: str) -> None:
        now = self._clock()
        record = self._record(channel)
        self._remember(record, now, None)
        before = record.breaker.state
        record.breaker.on_success(now)
        model_breaker = record.models.get(model)
        if model_breaker is not None:
            model_breaker.on_success(now)
        if before != record.breaker.state:
            self._notify(channel, None, record.breaker.state)

    def record_failure(self, channel: str, model: str, kind: FailureKind) -> None:
        if kind == "client":
            return
        now = self._clock()
        record = self._record(channel)
        self._remember(record, now, kind)
        if kind in DEAD_CHANNEL_KINDS:
            return  # shown in the admin view only; a confirming probe may disable the channel
        before = record.breaker.state
        record.breaker.on_failure(now)
        model_breaker = self._model_breaker(record, model)
        if model_breaker is not None:
            before_model = model_breaker.state
            model_breaker.on_failure(now)
            if before_model != model_breaker.state:
                self._notify(channel, model, model_breaker.state)
        if before != record.breaker.state:
            self._notify(channel, None, record.breaker.state)

    # --- disabling -------------------------------------------------------------------------------

    def disable(self, channel: str, reason: str) -> None:
        if channel not in self._disabled:
            self._disabled[channel] = _Disabled(reason=reason, since=time.time())
            self._notify(channel, None, "disabled")

    # --- Retry-After ---------------------------------------------------------------------------

    def cool_down(self, channel: str, seconds: float) -> None:
        if seconds > 0:
            until = self._clock() + seconds
            self._resting_until[channel] = max(until, self._resting_until.get(channel, 0.0))

    def cooling_down(self, channel: str) -> bool:
        until = self._resting_until.get(channel)
        if until is None:
            return False
        if until <= self._clock():
            del self._resting_until[channel]
            return False
        return True

    def enable(self, channel: str) -> bool:
        """Re-enable a channel and reset its breakers; True when it was disabled."""
        was = self._disabled.pop(channel, None) is not None
        self._channels.pop(channel, None)
        self._notify(channel, None, "closed")
        return was

    def disabled_channels(self) -> list[str]:
        return list(self._disabled)

    def force_state(self, channel: str, model: str | None, state: str) -> None:
        """Apply a breaker transition another replica observed; no change is re-announced.

        Only open and closed travel: a half-open probe is each replica's own decision once its
        cool-down (counted from when it learned of the opening) is over.
        """
        if state not in ("open", "closed"):
            return
        record = self._record(channel)
        breaker = record.breaker if model is None else self._model_breaker(record, model)
        if breaker is not None:
            breaker.force(state, self._clock())  # type: ignore[arg-type]

    # --- reporting -------------------------------------------------------------------------------

    def state_of(self, channel: str) -> CircuitState:
        if channel in self._disabled:
            return "disabled"
        record = self._channels.get(channel)
        if record is None:
            return "closed"
        breaker = record.breaker
        if breaker.state == "open" and breaker.peek(self._clock()):
            return "half_open"  # the cool-down is over; the next request is the probe
        return breaker.state

    def snapshot(self, channel: str) -> dict[str, Any]:
        now = self._clock()
        record = self._channels.get(channel)
        disabled = self._disabled.get(channel)
        view: dict[str, Any] = {"state": self.state_of(channel), "reason": None}
        if disabled is not None:
            view.update(reason=disabled.reason, disabled_since=disabled.since)
        if record is None:
            view.update(consecutive_failures=0, recent={"window_s": self._config.window_s,
                        "requests": 0, "failures": 0, "by_kind": {}}, models={})  # fmt: skip
            return view
        self._trim(record, now)
        kinds = Counter(kind for _, kind in record.recent if kind is not None)
        if view["reason"] is None and record.breaker.state != "closed":
            view["reason"] = "consecutive failures or error rate over the window"
        view["consecutive_failures"] = record.breaker.consecutive
        view["recent"] = {
            "window_s": self._config.window_s,
            "requests": len(record.recent),
            "failures": sum(kinds.values()),
            "by_kind": dict(kinds),
        }
        view["models"] = {m: b.state for m, b in record.models.items() if b.state != "closed"}
        return view

    def _remember(self, record: _ChannelRecord, now: float, kind: FailureKind | None) -> None:
        record.recent.append((now, kind))
        self._trim(record, now)

    def _trim(self, record: _ChannelRecord, now: float) -> None:
        horizon = now - self._config.window_s
        recent = record.recent
        while recent and recent[0][0] < horizon:
            recent.popleft()
        while len(recent) > 10_000:  # bound memory under extreme rates
            recent.popleft()

    def _notify(self, channel: str, model: str | None, state: CircuitState) -> None:
        if self._on_change is not None:
            self._on_change(channel, model, state)
