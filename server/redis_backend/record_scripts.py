"""The Lua scripts of the Redis case record; each runs atomically on the Redis server.

Key names are built in `server.redis_backend.record.RecordKeys` and passed in KEYS, so every
script names all the keys it touches (they share one cluster slot, `{chain}`).
"""

from __future__ import annotations

# Append one sealed batch, but only if the chain head is still the one it was sealed after.
#
# KEYS: 1 head, 2 end (last storage position), 3 records, 4 shredded, 5 activity,
#       6 batch marker, then for each session i of n: its position list at 6+i and its
#       wrapped data keys at 6+n+i.
# ARGV: 1 expected head seq ('0' for none), 2 expected head hash ('' for none), 3 new head
#       seq, 4 new head hash, 5 attempt number, 6 marker ttl (seconds), 7 n; then per session
#       4 values: ref, '1' if its data key is new (informative), key id, wrapped key ('' if
#       nothing to store); then m; then per record 3 values: session index, record, activity
#       time ('' for access events, which do not make a session recent).
# Wrapped keys are only ever written by this script, which always moves the head, so an
# unchanged head also means the sessions' keys are as they were read: a new session's fresh
# data key cannot overwrite one stored meanwhile. Shredding does not move the head, hence the
# shredded check.
# Returns {'ok'}; {'done', attempt} if an earlier attempt of the batch already committed (its
# reply was lost); {'moved'} if someone appended since the head was read; {'shredded', ref...}.
APPEND = """
local done = redis.call('GET', KEYS[6])
if done then return {'done', done} end
local head = redis.call('HMGET', KEYS[1], 'seq', 'hash')
if (head[1] or '0') ~= ARGV[1] or (head[2] or '') ~= ARGV[2] then return {'moved'} end
local n = tonumber(ARGV[7])
local refs = {}
local shredded = {}
local a = 8
for i = 1, n do
  refs[i] = ARGV[a]
  if redis.call('HEXISTS', KEYS[4], ARGV[a]) == 1 then table.insert(shredded, ARGV[a]) end
  a = a + 4
end
if #shredded > 0 then
  table.insert(shredded, 1, 'shredded')
  return shredded
end
a = 8
for i = 1, n do
  if ARGV[a + 3] ~= '' then redis.call('HSET', KEYS[6 + n + i], ARGV[a + 2], ARGV[a + 3]) end
  a = a + 4
end
local m = tonumber(ARGV[a])
a = a + 1
local pos = tonumber(redis.call('GET', KEYS[2]) or '0')
for j = 1, m do
  local i = tonumber(ARGV[a])
  pos = pos + 1
  local field = string.format('%d', pos)
  redis.call('HSET', KEYS[3], field, ARGV[a + 1])
  redis.call('RPUSH', KEYS[6 + i], field)
  if ARGV[a + 2] ~= '' then redis.call('ZADD', KEYS[5], 'GT', ARGV[a + 2], refs[i]) end
  a = a + 3
end
redis.call('SET', KEYS[2], string.format('%d', pos))
redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'hash', ARGV[4])
redis.call('SET', KEYS[6], ARGV[5], 'EX', ARGV[6])
return {'ok'}
"""

# Destroy a session's wrapped data keys and mark it shredded, unless (ARGV[3] = '1') it is
# on legal hold. KEYS: 1 wrapped data keys, 2 shredded, 3 activity, 4 holds.
# ARGV: 1 ref, 2 time. Returns 1 if keys were destroyed, 0 if none, -1 if held.
SHRED = """
if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return -1 end
local destroyed = redis.call('DEL', KEYS[1])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return destroyed
"""

# Put a session on legal hold if it has a record and was not shredded.
# KEYS: 1 its position list, 2 shredded, 3 holds. ARGV: 1 ref, 2 the hold (JSON).
# Returns 'shredded', 'missing' or 'ok'.
HOLD = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 'shredded' end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 'ok'
"""
