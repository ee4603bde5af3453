"""The Lua scripts of the Redis engine's history and presence (each runs atomically at Redis).

History, per channel: a HASH (``epoch``, ``offset``: the last offset given, ``bytes``: the
JSON bytes in the stream) and a STREAM of publications with the id ``<offset>-1`` and the
fields ``d`` (the JSON) and ``t`` (Redis' time, ms).  Both keys expire ``ttl`` after the last
publish, so an idle channel's history vanishes whole and its next publication starts a new
epoch, as after a FLUSHALL.

Presence, per channel: a ZSET (socket id -> expiry, Redis' time in ms) and a HASH (socket id
-> the member's JSON ``{"socketId", "user", "worker"}``).  Join and leave events are that JSON
with ``"event"`` put in front, published on the channel's events channel (an empty name: the
channel publishes no events).

The key/value store (``exchange.set/get/...``): a HASH of top-level keys (the field is the
key's JSON) to their entry, :meth:`gsc.core.datamap.DataMap.export_entry` as JSON; a ZSET of
the keys with a value in insertion order (scored by a counter key) and a ZSET of the keys
with an expiry, scored by the earliest.  A call reads the entries it touches, runs the
command on a :class:`~gsc.core.datamap.DataMap` in the worker, and writes back with
``KV_WRITE`` only when no entry changed meanwhile (else it runs again).
"""

COMMON = """
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
"""

HISTORY_COMMON = COMMON + """
-- the channel's epoch, a new one (an empty history) when the history is gone
local function ensure_epoch(meta, stream, candidate, ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then
    return epoch
  end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', candidate, 'offset', 0, 'bytes', 0)
  redis.call('PEXPIRE', meta, ttl)
  return candidate
end

-- drop the oldest publications past size, max_bytes or older than cutoff (ms)
local function trim(meta, stream, size, max_bytes, cutoff)
  local length = redis.call('XLEN', stream)
  local bytes = tonumber(redis.call('HGET', meta, 'bytes') or 0)
  if length == 0 then
    redis.call('HSET', meta, 'bytes', 0)
    return
  end
  local dropped, dropped_bytes, last, done = 0, 0, nil, false
  local count = math.max(2, math.min(16, length - size + 1))
  while not done and dropped < length do
    local batch = redis.call('XRANGE', stream, last and ('(' .. last) or '-', '+', 'COUNT', count)
    done = #batch == 0
    for _, entry in ipairs(batch) do
      local fields = entry[2]
      if length - dropped <= size and bytes - dropped_bytes <= max_bytes
          and tonumber(fields[4]) > cutoff then
        done = true
        break
      end
      dropped = dropped + 1
      dropped_bytes = dropped_bytes + #fields[2]
      last = entry[1]
    end
    count = 16
  end
  if dropped > 0 then
    redis.call('XTRIM', stream, 'MAXLEN', length - dropped)
    redis.call('HINCRBY', meta, 'bytes', -dropped_bytes)
  end
end
"""

HISTORY_PUBLISH = HISTORY_COMMON + """
-- KEYS: meta, stream; ARGV: json, candidate epoch, size, ttl ms, max bytes, pub/sub channel
local meta, stream = KEYS[1], KEYS[2]
local json, ttl = ARGV[1], tonumber(ARGV[4])
local epoch = ensure_epoch(meta, stream, ARGV[2], ttl)
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local now = now_ms()
redis.call('XADD', stream, string.format('%d-1', offset), 'd', json, 't', string.format('%d', now))
redis.call('HINCRBY', meta, 'bytes', #json)
trim(meta, stream, tonumber(ARGV[3]), tonumber(ARGV[5]), now - ttl)
redis.call('PEXPIRE', meta, ttl)
redis.call('PEXPIRE', stream, ttl)
redis.call('PUBLISH', ARGV[6], string.format('H%d ', offset) .. epoch .. ' ' .. json)
return {offset, epoch}
"""

HISTORY_READ = HISTORY_COMMON + """
-- KEYS: meta, stream; ARGV: candidate epoch, size, ttl ms, max bytes, since ('' for the last
-- ones), limit.  Returns {epoch, latest offset, entries (ascending from since, else newest first)}
local meta, stream = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[3])
local epoch = ensure_epoch(meta, stream, ARGV[1], ttl)
trim(meta, stream, tonumber(ARGV[2]), tonumber(ARGV[4]), now_ms() - ttl)
local offset = tonumber(redis.call('HGET', meta, 'offset'))
local entries
if ARGV[5] == '' then
  entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', ARGV[6])
else
  entries = redis.call('XRANGE', stream, string.format('%d-0', tonumber(ARGV[5]) + 1), '+',
                       'COUNT', ARGV[6])
end
return {epoch, offset, entries}
"""

HISTORY_NEW_EPOCH = """
-- KEYS: meta; ARGV: the epoch seen, a new one.  Gives the history the new epoch when it still
-- has the one seen (its offsets went back: a failover lost publications).  The epoch.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
  return ARGV[2]
end
return epoch or ''
"""

PRESENCE_COMMON = COMMON + """
local function publish_event(events, event, member)
  if events ~= '' then
    redis.call('PUBLISH', events, '{"event":"' .. event .. '",' .. string.sub(member, 2))
  end
end

-- remove the members whose expiry passed (at most 1000 a call), publishing their leaves
local function drop_expired(zset, hash, events, now)
  local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(expired) do
    local member = redis.call('HGET', hash, id)
    redis.call('ZREM', zset, id)
    redis.call('HDEL', hash, id)
    if member then
      publish_event(events, 'leave', member)
    end
  end
end

-- add or refresh a member; false when it is new and the channel has max members already
local function put_member(zset, hash, events, id, member, max_members, now, ttl)
  local known = redis.call('ZSCORE', zset, id)
  if not known and redis.call('ZCARD', zset) >= max_members then
    return false
  end
  redis.call('ZADD', zset, now + ttl, id)
  redis.call('HSET', hash, id, member)
  if not known then
    publish_event(events, 'join', member)
  end
  return true
end

local function keep_keys(zset, hash, ttl)
  redis.call('PEXPIRE', zset, ttl)
  redis.call('PEXPIRE', hash, ttl)
end
"""

PRESENCE_JOIN = PRESENCE_COMMON + """
-- KEYS: zset, hash; ARGV: events, ttl ms, max members, socket id, member JSON.  1 or 0 (full)
local zset, hash, events, ttl = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local now = now_ms()
drop_expired(zset, hash, events, now)
if not put_member(zset, hash, events, ARGV[4], ARGV[5], tonumber(ARGV[3]), now, ttl) then
  return 0
end
keep_keys(zset, hash, ttl)
return 1
"""

PRESENCE_REFRESH = PRESENCE_COMMON + """
-- KEYS: zset, hash; ARGV: events, ttl ms, max members, then socket id, member JSON pairs.
-- Returns how many members could not be put back (the channel was full).
local zset, hash, events, ttl = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local max_members = tonumber(ARGV[3])
local now = now_ms()
drop_expired(zset, hash, events, now)
local refused = 0
for i = 4, #ARGV, 2 do
  if not put_member(zset, hash, events, ARGV[i], ARGV[i + 1], max_members, now, ttl) then
    refused = refused + 1
  end
end
keep_keys(zset, hash, ttl)
return refused
"""

PRESENCE_LEAVE = PRESENCE_COMMON + """
-- KEYS: zset, hash; ARGV: events, socket id
local zset, hash, events = KEYS[1], KEYS[2], ARGV[1]
drop_expired(zset, hash, events, now_ms())
local member = redis.call('HGET', hash, ARGV[2])
redis.call('ZREM', zset, ARGV[2])
redis.call('HDEL', hash, ARGV[2])
if member then
  publish_event(events, 'leave', member)
end
return 0
"""

PRESENCE_QUERY = PRESENCE_COMMON + """
-- KEYS: zset, hash; ARGV: events.  The members' JSON.
local zset, hash, events = KEYS[1], KEYS[2], ARGV[1]
local now = now_ms()
drop_expired(zset, hash, events, now)
local members = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', zset, now, '+inf')) do
  local member = redis.call('HGET', hash, id)
  if member then
    members[#members + 1] = member
  end
end
return members
"""

KV_WRITE = """
-- KEYS: store, order, expiry, seq.  ARGV, five per top-level key: field, old entry ('': none),
-- new entry ('': none), '1' when the new entry has a value, its earliest expiry ('': none).
-- 1, or 0 (nothing written) when an old entry is not the current one.
local store, order, expiry, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
for i = 1, #ARGV, 5 do
  if (redis.call('HGET', store, ARGV[i]) or '') ~= ARGV[i + 1] then
    return 0
  end
end
for i = 1, #ARGV, 5 do
  local field = ARGV[i]
  if ARGV[i + 2] == '' then
    redis.call('HDEL', store, field)
  else
    redis.call('HSET', store, field, ARGV[i + 2])
  end
  if ARGV[i + 3] == '1' then
    if not redis.call('ZSCORE', order, field) then
      redis.call('ZADD', order, redis.call('INCR', seq), field)
    end
  else
    redis.call('ZREM', order, field)
  end
  if ARGV[i + 4] == '' then
    redis.call('ZREM', expiry, field)
  else
    redis.call('ZADD', expiry, ARGV[i + 4], field)
  end
end
return 1
"""

KV_READ_ALL = """
-- KEYS: store, order.  {the fields with a value in insertion order, HGETALL of the store}
return {redis.call('ZRANGE', KEYS[2], 0, -1), redis.call('HGETALL', KEYS[1])}
"""

KV_REMOVE_ALL = """
-- KEYS: store, order, expiry, seq
for _, key in ipairs(KEYS) do
  redis.call('DEL', key)
end
return 0
"""


def sharded(script):
    """``script`` publishing with SPUBLISH (a Redis Cluster's sharded pub/sub) instead of PUBLISH."""
    return script.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
