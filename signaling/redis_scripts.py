"""The Lua scripts behind RedisHub: each one change to live state, atomic across all nodes.

Keys (P is the prefix, `erv:live:` by default):

    P p:<pid>        hash: session, role, identity, name, staff, secret (sha256 hex), seq,
                     node (the node holding its socket, "" when away), epoch, joined_at,
                     cred (a caller's credential digest)
    P kn:<id>        hash: a device waiting to join as the caller: session, credential,
                     node (holding its socket), since; P kns:<session> lists them
    P b:<pid>        list: the resume buffer, "<seq>|<sealed message>", newest last, bounded
    P s:<session>    set: the pids in a session (or a staff desk, `lobby:<staff id>`)
    P staff:<id>     set: the pids of one staff member, to sign them out everywhere
    P np:<node>      set: the pids whose socket a node holds
    P away           sorted set: pid -> when its resume window closes (ms)
    P h:<session>    list: chat and advice kept for late joiners; P loc:<session> the location
    P k:<session>    the session's live key, wrapped by the case record's master key
    P end:<session>  marks a session that ended; nobody joins it again
    P node:<node>    a node's heartbeat (expires when the node dies); P nodes lists them all
    P n:<node>       the pub/sub channel a node listens on

Message content is sealed (AES-GCM) under a per-session live key before it reaches Redis, so
chat, advice and locations are never in Redis or its append-only file in the clear; ending the
session deletes the key, which leaves any copy still on disk unreadable.

Delivering a message numbers it, buffers it and publishes it to the node holding the socket in
one step, so the order a participant sees is the order Redis ran the scripts, and a message
for an away participant waits in its buffer for the resume. Keys are built inside the scripts,
so this needs a single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

# Shared by the scripts below: deliver one sealed message (`blob`, the JSON object without its
# seq, encrypted by the node under the session's live key) to `pid`. The node that holds the
# socket opens it and adds the seq; Redis never sees the content in the clear.
_DELIVER = """
local function deliver(P, pid, blob, bufmax)
  local pk = P .. 'p:' .. pid
  local seq = redis.call('HINCRBY', pk, 'seq', 1)
  local bk = P .. 'b:' .. pid
  redis.call('RPUSH', bk, seq .. '|' .. blob)
  redis.call('LTRIM', bk, -bufmax, -1)
  local node = redis.call('HGET', pk, 'node')
  if node and node ~= '' then
    redis.call('PUBLISH', P .. 'n:' .. node, 'd|' .. pid .. '|' .. seq .. '|' .. blob)
  end
  return seq
end
"""

# ARGV: P, bufmax, session, pid, role, identity, name, staff, secret, node, now, ttl, lobby,
# credential digest, replace ('1': the same identity's place is replaced; '0': refused)
# Returns {"ended"} | {"conflict"} | {"taken"} | {"ok", replaced pid, its node, its role, ...}
ADMIT = """
local P, session, pid = ARGV[1], ARGV[3], ARGV[4]
local role, identity, node, ttl = ARGV[5], ARGV[6], ARGV[10], tonumber(ARGV[12])
if redis.call('EXISTS', P .. 'end:' .. session) == 1 then return {'ended'} end
local sk = P .. 's:' .. session
local members = redis.call('SMEMBERS', sk)
if ARGV[13] == '0' then
  for _, m in ipairs(members) do
    local f = redis.call('HMGET', P .. 'p:' .. m, 'role', 'identity')
    if f[1] == role and f[2] ~= identity then return {'conflict'} end
  end
end
if ARGV[15] == '0' then
  for _, m in ipairs(members) do
    if redis.call('HGET', P .. 'p:' .. m, 'identity') == identity then return {'taken'} end
  end
end
local out = {'ok'}
for _, m in ipairs(members) do
  local mk = P .. 'p:' .. m
  local f = redis.call('HMGET', mk, 'identity', 'node', 'role', 'staff', 'name')
  if f[1] == identity then
    table.insert(out, m); table.insert(out, f[2] or ''); table.insert(out, f[3] or '')
    table.insert(out, f[4] or ''); table.insert(out, f[5] or '')
    redis.call('DEL', mk, P .. 'b:' .. m)
    redis.call('SREM', sk, m)
    if f[2] and f[2] ~= '' then redis.call('SREM', P .. 'np:' .. f[2], m) end
    if f[4] and f[4] ~= '' then redis.call('SREM', P .. 'staff:' .. f[4], m) end
    redis.call('ZREM', P .. 'away', m)
  elseif f[1] == false then
    redis.call('SREM', sk, m)  -- expired on its own; tidy the set
  end
end
local pk = P .. 'p:' .. pid
redis.call('HSET', pk, 'session', session, 'role', role, 'identity', identity,
  'name', ARGV[7], 'staff', ARGV[8], 'secret', ARGV[9], 'seq', 0, 'node', node,
  'epoch', 1, 'joined_at', ARGV[11], 'cred', ARGV[14])
redis.call('EXPIRE', pk, ttl)
redis.call('SADD', sk, pid)
redis.call('EXPIRE', sk, ttl)
redis.call('SADD', P .. 'np:' .. node, pid)
if ARGV[8] ~= '' then
  redis.call('SADD', P .. 'staff:' .. ARGV[8], pid)
  redis.call('EXPIRE', P .. 'staff:' .. ARGV[8], ttl)
end
return out
"""

# ARGV: P, bufmax, pid, secret, last_seq, node, ttl
# Returns {"gone"} | {"toofar"} | {"ok", old node, epoch, session, "seq|blob", ...}
ATTACH = """
local P, pid, last = ARGV[1], ARGV[3], tonumber(ARGV[5])
local node, ttl = ARGV[6], tonumber(ARGV[7])
local pk, bk = P .. 'p:' .. pid, P .. 'b:' .. pid
local f = redis.call('HMGET', pk, 'secret', 'seq', 'node', 'session')
if f[1] == false or f[1] ~= ARGV[4] then return {'gone'} end
local seq = tonumber(f[2])
if last > seq then return {'toofar'} end
local entries = redis.call('LRANGE', bk, 0, -1)
local frames = {}
if last < seq then
  local first = #entries > 0 and tonumber(string.match(entries[1], '^(%d+)|')) or nil
  if first == nil or first > last + 1 then return {'toofar'} end
  for _, e in ipairs(entries) do
    local s = string.match(e, '^(%d+)|')
    if tonumber(s) > last then table.insert(frames, e) end
  end
end
local old = f[3] or ''
if old ~= '' then redis.call('SREM', P .. 'np:' .. old, pid) end
local epoch = redis.call('HINCRBY', pk, 'epoch', 1)
redis.call('HSET', pk, 'node', node)
redis.call('ZREM', P .. 'away', pid)
redis.call('SADD', P .. 'np:' .. node, pid)
redis.call('EXPIRE', pk, ttl)
redis.call('EXPIRE', bk, ttl)
local out = {'ok', old, epoch, f[4]}
for _, frame in ipairs(frames) do table.insert(out, frame) end
return out
"""

# ARGV: P, bufmax, pid, node, epoch ("" = whatever epoch), deadline_ms, away_ttl
# Returns 1 if the participant is now away (it was on `node`), else 0.
DETACH = """
local P, pid, node = ARGV[1], ARGV[3], ARGV[4]
local pk = P .. 'p:' .. pid
local f = redis.call('HMGET', pk, 'node', 'epoch')
if f[1] ~= node then
  redis.call('SREM', P .. 'np:' .. node, pid)
  return 0
end
if ARGV[5] ~= '' and f[2] ~= ARGV[5] then return 0 end
redis.call('SREM', P .. 'np:' .. node, pid)
redis.call('HSET', pk, 'node', '')
redis.call('ZADD', P .. 'away', ARGV[6], pid)
redis.call('EXPIRE', pk, ARGV[7])
redis.call('EXPIRE', P .. 'b:' .. pid, ARGV[7])
return 1
"""

# ARGV: P, bufmax, pid, only_if_away ("1"/"0")
# Returns {} if nothing was removed, else {session, role, node, staff, identity, name}.
REMOVE = """
local P, pid = ARGV[1], ARGV[3]
local pk = P .. 'p:' .. pid
local f = redis.call('HMGET', pk, 'session', 'role', 'node', 'staff', 'identity', 'name')
if f[1] == false then
  redis.call('ZREM', P .. 'away', pid)
  return {}
end
if ARGV[4] == '1' and f[3] ~= '' then return {} end
redis.call('DEL', pk, P .. 'b:' .. pid)
redis.call('SREM', P .. 's:' .. f[1], pid)
if f[3] ~= '' then redis.call('SREM', P .. 'np:' .. f[3], pid) end
if f[4] ~= '' then redis.call('SREM', P .. 'staff:' .. f[4], pid) end
redis.call('ZREM', P .. 'away', pid)
return f
"""

# ARGV: P, bufmax, session, body, exclude pid ("" for none), roles ("" for all, else ",a,b,")
# Returns how many participants it was delivered to.
BROADCAST = _DELIVER + """
local P, bufmax, session, body = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local count = 0
for _, m in ipairs(redis.call('SMEMBERS', P .. 's:' .. session)) do
  if m ~= ARGV[5] then
    local role = redis.call('HGET', P .. 'p:' .. m, 'role')
    if role and (ARGV[6] == '' or string.find(ARGV[6], ',' .. role .. ',', 1, true)) then
      deliver(P, m, body, bufmax)
      count = count + 1
    end
  end
end
return count
"""

# ARGV: P, bufmax, session of the sender, sender pid, target pid, body
# Returns the target's new seq, or -1 if the target is not a peer in the sender's session.
ROUTE = _DELIVER + """
local P, bufmax, session, to = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[5]
if to == ARGV[4] then return -1 end
if redis.call('HGET', P .. 'p:' .. to, 'session') ~= session then return -1 end
return deliver(P, to, ARGV[6], bufmax)
"""

# ARGV: P, bufmax, pid, body, body, ...  Returns the last seq (0 if the pid is gone).
DELIVER_MANY = _DELIVER + """
local P, bufmax, pid = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if redis.call('EXISTS', P .. 'p:' .. pid) == 0 then return 0 end
local seq = 0
for i = 4, #ARGV do seq = deliver(P, pid, ARGV[i], bufmax) end
return seq
"""
