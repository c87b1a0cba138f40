"""Per-key rpm/tpm limits shared by every replica: one atomic Lua script per admission.

The algorithm is the sliding-window counter of ``sluice.limits`` (current and previous one-minute
windows, load = previous * (1 - elapsed/60) + current), run inside Redis so the check and the
increment cannot interleave between replicas. The script reads the clock with ``TIME`` so all
replicas agree on window boundaries even when their clocks drift. Both windows of a key live
under the key's hash tag (``{sluice:key:<id>}``) so the script is valid on Redis Cluster.

When Redis is down: policy "open" uses a per-replica ``MemoryRateLimiter`` (a key may then get
up to N times its limit across N replicas); policy "closed" answers 503 for keys that have a
limit (keys without rpm/tpm need no limiter and are still served).
"""

from __future__ import annotations

from typing import Any

from sluice.errors import ServiceUnavailable
from sluice.limits import WINDOW_S, LimitDecision, MemoryRateLimiter, WindowState, format_reset
from sluice.redis_backend.client import RedisBackend, RedisUnavailable, key_tag

__all__ = ["RATE_KINDS", "WINDOW_CLOCK", "RedisRateLimiter", "rate_headers", "window_keys"]

# Redis's clock, the current one-minute window's index and the time elapsed in it, and
# ``roll(key)``: a window hash's (current, previous) counts as of this window.
WINDOW_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local index = math.floor(now / 60)
local elapsed = now - index * 60
local function roll(key)
  local v = redis.call('HMGET', key, 'w', 'cur', 'prev')
  local w = tonumber(v[1])
  local cur = tonumber(v[2]) or 0
  local prev = tonumber(v[3]) or 0
  if w ~= index then
    if w == index - 1 then prev = cur else prev = 0 end
    cur = 0
  end
  return cur, prev
end
"""

_ADMIT = (
    WINDOW_CLOCK
    + """
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local costs = {1, tonumber(ARGV[3])}
local cur = {0, 0}
local prev = {0, 0}
for i = 1, 2 do
  if limits[i] >= 0 then
    cur[i], prev[i] = roll(KEYS[i])
    if prev[i] * (1 - elapsed / 60) + cur[i] + costs[i] > limits[i] then
      return {0, i, math.floor(elapsed * 1000000), cur[1], prev[1], cur[2], prev[2]}
    end
  end
end
for i = 1, 2 do
  if limits[i] >= 0 then
    cur[i] = cur[i] + costs[i]
    redis.call('HSET', KEYS[i], 'w', index, 'cur', cur[i], 'prev', prev[i])
    redis.call('EXPIRE', KEYS[i], 180)
  end
end
return {1, 0, math.floor(elapsed * 1000000), cur[1], prev[1], cur[2], prev[2]}
"""
)

_ADJUST = """
local t = redis.call('TIME')
local index = math.floor((tonumber(t[1]) + tonumber(t[2]) / 1000000) / 60)
local v = redis.call('HMGET', KEYS[1], 'w', 'cur', 'prev')
local w = tonumber(v[1])
if w == nil then return 0 end
local cur = tonumber(v[2]) or 0
local prev = tonumber(v[3]) or 0
if w ~= index then
  if w == index - 1 then prev = cur else prev = 0 end
  cur = 0
end
cur = math.max(cur + tonumber(ARGV[1]), 0)
redis.call('HSET', KEYS[1], 'w', index, 'cur', cur, 'prev', prev)
redis.call('EXPIRE', KEYS[1], 180)
return 1
"""

RATE_KINDS = {1: "requests", 2: "tokens"}


def rate_headers(
    kind: str, limit: int, state: WindowState, elapsed: float, cost: int
) -> dict[str, str]:
    """``x-ratelimit-*`` for one window as seen at ``elapsed`` seconds into the minute."""
    remaining = limit - state.load(elapsed)
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(int(remaining), 0)),
        f"x-ratelimit-reset-{kind}": format_reset(state.wait_for(limit, cost, elapsed)),
    }


def window_keys(key_id: str) -> list[str]:
    """The key's request and token window hashes (one hash tag: one Cluster slot)."""
    tag = key_tag(key_id)
    return [f"{tag}:rpm", f"{tag}:tpm"]


class RedisRateLimiter:
    def __init__(self, backend: RedisBackend, fallback: MemoryRateLimiter | None = None) -> None:
        self._backend = backend
        self._fallback = fallback or MemoryRateLimiter()
        self._admit = backend.client.register_script(_ADMIT)
        self._adjust = backend.client.register_script(_ADJUST)

    async def admit(
        self, key_id: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> LimitDecision:
        if rpm is None and tpm is None:
            return LimitDecision(True)
        args = [-1 if rpm is None else rpm, -1 if tpm is None else tpm, tokens]
        try:
            raw = await self._backend.script(self._admit, window_keys(key_id), args)
        except RedisUnavailable:
            if self._backend.policy == "closed":
                raise ServiceUnavailable(
                    "Rate limiting is temporarily unavailable (shared limiter unreachable); "
                    "retry shortly.",
                    code="rate_limiter_unavailable",
                    headers={"retry-after": "1"},
                ) from None
            return await self._fallback.admit(key_id, rpm, tpm, tokens)
        return _decision(raw, rpm, tpm, tokens)

    async def adjust_tokens(self, key_id: str, tpm: int | None, delta: int) -> None:
        if tpm is None or delta == 0:
            return
        try:
            await self._backend.script(self._adjust, window_keys(key_id)[1:], [delta])
        except RedisUnavailable:
            await self._fallback.adjust_tokens(key_id, tpm, delta)


def _decision(raw: Any, rpm: int | None, tpm: int | None, tokens: int) -> LimitDecision:
    allowed, exceeded, elapsed_us, rq_cur, rq_prev, tk_cur, tk_prev = (int(v) for v in raw)
    elapsed = min(elapsed_us / 1_000_000, WINDOW_S)
    checks: list[tuple[int, int | None, int, WindowState]] = [
        (1, rpm, 1, WindowState(current=rq_cur, previous=rq_prev)),
        (2, tpm, tokens, WindowState(current=tk_cur, previous=tk_prev)),
    ]
    if not allowed:
        _, limit, cost, state = checks[exceeded - 1]
        assert limit is not None
        kind = RATE_KINDS[exceeded]
        refused = rate_headers(kind, limit, state, elapsed, cost)
        return LimitDecision(False, refused, state.wait_for(limit, cost, elapsed), kind)
    headers: dict[str, str] = {}
    for index, limit, _, state in checks:
        if limit is not None:
            headers.update(rate_headers(RATE_KINDS[index], limit, state, elapsed, 1))
    return LimitDecision(True, headers)
