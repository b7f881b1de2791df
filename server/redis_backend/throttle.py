"""Sign-in throttle counts in Redis, shared by every node (server.throttle has the rules).

Keys, after the prefix: `throttle:<sha256>` hash {score, at}, expiring once the count has
decayed to nothing (KEEP_HALF_LIVES half-lives after the last failure). Counting a failure is
one Lua script, so guesses sent in parallel to several nodes cannot all slip under a limit.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from server.throttle import KEEP_HALF_LIVES, allowed_score, decayed

# Each key's decayed count (a local function shared by both scripts).
_DECAYED = """
local now, half_life = tonumber(ARGV[1]), tonumber(ARGV[2])
local function decayed(key)
  local score = tonumber(redis.call('HGET', key, 'score')) or 0
  local at = tonumber(redis.call('HGET', key, 'at')) or now
  local age = now - at
  if age < 0 then age = 0 end
  return score * math.pow(0.5, age / half_life)
end
local function store(key, score)
  redis.call('HSET', key, 'score', string.format('%.17g', score), 'at', ARGV[1])
  redis.call('PEXPIRE', key, ARGV[3])
end
"""

# KEYS: the throttle keys. ARGV: now, half-life, expiry in ms, then each key's highest count
# still allowed. Returns {1 if counted, each count (as strings: Redis turns Lua numbers into
# integers)}.
_TAKE = _DECAYED + """
local scores, within = {}, 1
for i, key in ipairs(KEYS) do
  scores[i] = decayed(key)
  if scores[i] > tonumber(ARGV[3 + i]) then within = 0 end
end
local out = {within}
for i, key in ipairs(KEYS) do
  if within == 1 then
    scores[i] = scores[i] + 1
    store(key, scores[i])
  end
  out[i + 1] = string.format('%.17g', scores[i])
end
return out
"""

# KEYS: the throttle keys. ARGV: now, half-life, expiry in ms.
_GIVE_BACK = _DECAYED + """
for _, key in ipairs(KEYS) do
  local score = decayed(key) - 1
  if score < 0 then score = 0 end
  store(key, score)
end
return 1
"""


class RedisThrottle:
    def __init__(self, redis: aioredis.Redis, half_life: float, prefix: str = "erv:") -> None:
        self.redis = redis
        self.half_life = half_life
        self.prefix = prefix
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)

    def _key(self, key: str) -> str:
        return f"{self.prefix}throttle:{key}"

    async def scores(self, keys: list[str], now: float) -> list[float]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(self._key(key), ["score", "at"])
            rows = await pipe.execute()
        return [0.0 if score is None or at is None
                else decayed(float(score), float(at), now, self.half_life)
                for score, at in rows]

    def _args(self, now: float) -> list[str | int]:
        return [repr(now), repr(self.half_life),
                max(1000, int(KEEP_HALF_LIVES * self.half_life * 1000))]

    async def take(
        self, keys: list[str], limits: list[int], now: float
    ) -> tuple[bool, list[float]]:
        within, *counts = await self._take(
            keys=[self._key(key) for key in keys],
            args=[*self._args(now), *(repr(allowed_score(limit)) for limit in limits)],
        )
        return int(within) == 1, [float(count) for count in counts]

    async def give_back(self, keys: list[str], now: float) -> None:
        await self._give_back(keys=[self._key(key) for key in keys], args=self._args(now))

    async def clear(self, keys: list[str]) -> None:
        await self.redis.delete(*(self._key(key) for key in keys))
