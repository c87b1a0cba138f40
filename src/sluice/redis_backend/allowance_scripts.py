"""The Lua that grants and takes back a worker's allowance (see ``allowance.py``).

Keys, in order: the budget hash, the lease set (``budget_scripts``), the request window and the
token window (``limiter``); all under the key's hash tag.
"""

from __future__ import annotations

from sluice.redis_backend.budget_scripts import LEASE_FUNCTIONS
from sluice.redis_backend.limiter import WINDOW_CLOCK

__all__ = ["GRANT", "GIVE_BACK", "SETTLE_BATCH"]

# ARGV: budget, rpm, tpm (-1: none), wanted requests, tokens and cost per request, share
# divisor, fewest requests worth granting, lease id, lease lifetime (s), budget hash TTL (s).
# Each limit grants at most 1/divisor of what is left of it, so several workers holding
# allowances leave most of a key's room to exact admissions; a key near any of its limits
# gets no allowance and every request is admitted exactly.
# Returns {0} or {requests, window index, µs elapsed in it, rpm cur, rpm prev, tpm cur, prev}.
GRANT = (
    LEASE_FUNCTIONS
    + WINDOW_CLOCK
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
reclaim_expired(now)
local n = tonumber(ARGV[4])
local divisor = tonumber(ARGV[7])
local budget = tonumber(ARGV[1])
local cost = tonumber(ARGV[6])
if budget >= 0 and cost > 0 then
  local spent = tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0
  local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved')) or 0
  n = math.min(n, math.floor((budget - spent - reserved) / divisor / cost))
end
local limits = {tonumber(ARGV[2]), tonumber(ARGV[3])}
local per = {1, tonumber(ARGV[5])}
local cur = {0, 0}
local prev = {0, 0}
for i = 1, 2 do
  if limits[i] >= 0 then
    cur[i], prev[i] = roll(KEYS[2 + i])
    if per[i] > 0 then
      local load = prev[i] * (1 - elapsed / 60) + cur[i]
      n = math.min(n, math.floor((limits[i] - load) / divisor / per[i]))
    end
  end
end
if n < tonumber(ARGV[8]) then return {0} end
local hold = n * cost
redis.call('HINCRBY', KEYS[1], 'reserved', hold)
redis.call('HSET', KEYS[1], 'l:' .. ARGV[9], hold)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[10]), ARGV[9])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[11]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[11]))
for i = 1, 2 do
  if limits[i] >= 0 then
    cur[i] = cur[i] + n * per[i]
    redis.call('HSET', KEYS[2 + i], 'w', index, 'cur', cur[i], 'prev', prev[i])
    redis.call('EXPIRE', KEYS[2 + i], 180)
  end
end
return {n, index, math.floor(elapsed * 1000000), cur[1], prev[1], cur[2], prev[2]}
"""
)

# ARGV: lease id, budget, requests and tokens not used, the window they were counted in.
# Unused requests and tokens come off the window only while it is still the current one; after
# that they sit in the previous window, where they fade (counted, never over-admitted).
GIVE_BACK = (
    LEASE_FUNCTIONS
    + WINDOW_CLOCK
    + """
release_lease(ARGV[1], tonumber(ARGV[2]))
if index == tonumber(ARGV[5]) then
  for i = 1, 2 do
    local back = tonumber(ARGV[2 + i])
    local v = redis.call('HMGET', KEYS[2 + i], 'w', 'cur')
    if back > 0 and tonumber(v[1]) == index then
      redis.call('HSET', KEYS[2 + i], 'cur', math.max((tonumber(v[2]) or 0) - back, 0))
    end
  end
end
return 1
"""
)

# Settlements of requests admitted from one lease, added up over a short interval. KEYS: the
# budget hash, the lease set, the token window. ARGV: lease id, the estimates to release from
# the lease, the real cost to add to spent, the token correction (real minus reserved) for the
# current window (0: the key has no tpm limit).
SETTLE_BATCH = (
    LEASE_FUNCTIONS
    + WINDOW_CLOCK
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  release_lease(ARGV[1], tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[3]))
end
local delta = tonumber(ARGV[4])
if delta ~= 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  local cur, prev = roll(KEYS[3])
  redis.call('HSET', KEYS[3], 'w', index, 'cur', math.max(cur + delta, 0), 'prev', prev)
  redis.call('EXPIRE', KEYS[3], 180)
end
return 1
"""
)
