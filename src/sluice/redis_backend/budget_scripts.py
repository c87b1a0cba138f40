"""The Lua of a key's budget counter: reservations, settlements, and worker allowance leases.

Per key, the hash ``{sluice:key:<id>}:budget`` holds ``spent`` and ``reserved`` and one field
``l:<lease id>`` per outstanding allowance lease (micro-dollars a worker still holds, included
in ``reserved``); the sorted set ``{sluice:key:<id>}:leases`` scores each lease id with the
Redis time after which it is reclaimed, so a worker that dies holding a lease cannot keep that
part of the budget forever. Both keys share the hash tag, so every script is Cluster-safe.

Scripts here are text fragments joined into whole scripts: ``KEYS[1]`` is always the budget
hash and ``KEYS[2]`` the lease set.
"""

from __future__ import annotations

__all__ = [
    "BUDGET_TTL_S",
    "LEASE_FUNCTIONS",
    "RESERVE",
    "SETTLE",
    "SETTLE_LEASED",
    "budget_keys",
]

from sluice.redis_backend.client import key_tag

# Idle counters expire so Redis does not keep every key ever used; re-seeding is cheap.
BUDGET_TTL_S = 86_400


def budget_keys(key_id: str) -> list[str]:
    tag = key_tag(key_id)
    return [f"{tag}:budget", f"{tag}:leases"]


# Gives back up to ``amount`` of a lease's hold; the lease goes when nothing of it is left.
# A lease missing from the hash (reclaimed, or the counter was dropped and re-seeded since) holds
# nothing: giving back then only tidies the lease set.
LEASE_FUNCTIONS = """
local function release_lease(id, amount)
  local field = 'l:' .. id
  local held = tonumber(redis.call('HGET', KEYS[1], field))
  if not held then
    redis.call('ZREM', KEYS[2], id)
    return 0
  end
  local back = math.min(amount, held)
  if back > 0 then
    local reserved = redis.call('HINCRBY', KEYS[1], 'reserved', 0 - back)
    if reserved < 0 then redis.call('HSET', KEYS[1], 'reserved', 0) end
  end
  if held - back <= 0 then
    redis.call('HDEL', KEYS[1], field)
    redis.call('ZREM', KEYS[2], id)
  else
    redis.call('HSET', KEYS[1], field, held - back)
  end
  return back
end
local function reclaim_expired(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, id in ipairs(expired) do
    release_lease(id, tonumber(redis.call('HGET', KEYS[1], 'l:' .. id)) or 0)
  end
  return #expired
end
"""

RESERVE = (
    LEASE_FUNCTIONS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if tonumber(ARGV[3]) < 0 then return {-1, 0} end
  redis.call('HSET', KEYS[1], 'spent', ARGV[3], 'reserved', 0)
end
local budget = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local function committed()
  return (tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0)
    + (tonumber(redis.call('HGET', KEYS[1], 'reserved')) or 0)
end
local function refused(c)
  return budget >= 0 and (c + amount > budget or c >= budget)
end
local c = committed()
if refused(c) then
  -- Only a refusal pays for looking at leases: holds of workers that died are freed here.
  local t = redis.call('TIME')
  if reclaim_expired(tonumber(t[1]) + tonumber(t[2]) / 1000000) == 0 then return {0, c} end
  c = committed()
  if refused(c) then return {0, c} end
end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {1, c + amount}
"""
)

SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
-- 0 - x, not -x: Lua writes -0 as "-0", which HINCRBY refuses (a free request's release).
local reserved = redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(ARGV[1]))
if reserved < 0 then redis.call('HSET', KEYS[1], 'reserved', 0) end
redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
return 1
"""

# A request admitted from an allowance: its estimate comes out of the lease's hold (if the
# lease still holds it) and the real cost goes to spent.
SETTLE_LEASED = (
    LEASE_FUNCTIONS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
release_lease(ARGV[1], tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[3]))
return 1
"""
)
