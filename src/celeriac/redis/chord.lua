-- Count one finished header task of a chord, in the keys Celery 5.7's Redis backend uses for it, and
-- hand the whole header to the one caller whose report completes it.
--
-- KEYS[1] <group key>.j  the parts: a sorted set scored by header index (a list when unordered)
-- KEYS[2] <group key>.t  Celery's size adjustment (INCR'ed by add_to_chord); may be absent
-- KEYS[3] <group key>.s  the header's size (Celery's client SETs it when it sends the header)
-- KEYS[4] <group key>.d  the parts already counted, as "<task id>:<index>"
-- KEYS[5] <group key>    the saved group, whose lifetime follows the chord's
-- KEYS[6] <group key>.c  the claim: a token while someone sends the body, "done" after
-- ARGV[1] task id  ARGV[2] encoded [1, task id, state, result]  ARGV[3] "1" ordered, "0" not
-- ARGV[4] index ("+inf" when none)  ARGV[5] expiry of the chord keys in s (0: none)
-- ARGV[6] expiry of the saved group in s (0: none)  ARGV[7] claim lease in ms  ARGV[8] claim token
-- ARGV[9] the header's size, as this caller knows it ("0": unknown, read it from .s)
--
-- Returns {-1} once the chord is done; otherwise {parts counted, claimed (0/1)}, followed when claimed
-- by the parts in order (member, score pairs when ordered; members when not).

local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local ordered, score = ARGV[3] == '1', ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])

-- A late copy of a header task must not start the chord over after its body was sent.
if redis.call('GET', ckey) == 'done' then
  return {-1}
end

-- The first report of a part wins; a redelivered copy (even with another result) is not counted again.
if redis.call('SADD', dkey, ARGV[1] .. ':' .. score) == 1 then
  if ordered then
    redis.call('ZADD', jkey, score, ARGV[2])
  else
    redis.call('RPUSH', jkey, ARGV[2])
  end
end
local counted
if ordered then
  counted = redis.call('ZCARD', jkey)
else
  counted = redis.call('LLEN', jkey)
end

-- Celery's client sets the size before it sends the header; a header sent by celeriac sets it here,
-- so a Celery worker that reports a later part sees it too.
local size = redis.call('GET', skey)
if not size then
  if ARGV[9] == '0' then
    -- The caller does not know the size and Celery's client has not set it yet: it is set before the
    -- last header task is sent, so the report that completes the header will find it.
    return {counted, 0}
  end
  size = ARGV[9]
  redis.call('SET', skey, size)
end

if expires > 0 then
  for _, key in ipairs({jkey, tkey, skey, dkey}) do
    redis.call('EXPIRE', key, expires)
  end
  if group_expires > 0 then
    redis.call('EXPIRE', gkey, group_expires)
  end
end

local total = tonumber(size) + tonumber(redis.call('GET', tkey) or 0)
if counted < total or not redis.call('SET', ckey, ARGV[8], 'NX', 'PX', ARGV[7]) then
  return {counted, 0}
end
local parts
if ordered then
  parts = redis.call('ZRANGE', jkey, 0, -1, 'WITHSCORES')
else
  parts = redis.call('LRANGE', jkey, 0, -1)
end
local reply = {counted, 1}
for _, item in ipairs(parts) do
  reply[#reply + 1] = item
end
return reply
