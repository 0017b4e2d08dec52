-- Promote due delayed messages, then take up to ARGV[1] messages into this consumer's processing hash.
--
-- KEYS[1] processing hash   KEYS[2] delivery counts   KEYS[3] delayed zset
-- KEYS[4] heartbeat key     KEYS[5] consumer set      KEYS[6..] lists, in the order to take from
-- ARGV[1] limit  ARGV[2] now (unix s)  ARGV[3] tag prefix, new for every fetch but kept for the retry
-- of a fetch whose reply was lost  ARGV[4] lease (ms)  ARGV[5] consumer id
-- ARGV[6] how many due delayed messages to promote at most
--
-- Stored values are "<json header>\n<envelope bytes>": cjson escapes newlines, so the first one ends
-- the header, and the envelope is kept byte for byte even when it is not UTF-8.
--
-- Returns {next delayed due time or "", {tag, list, deliveries, envelope, ...}, 1 if messages are left
-- in the lists else 0 (absent when nothing was taken)}.

local prefix = ARGV[3]
if redis.call('HEXISTS', KEYS[1], prefix .. '1') == 1 then
  -- This very fetch ran before and its reply was lost (a dropped connection, a retried command):
  -- hand out what it took then, in the order taken, and take nothing more.
  local again = {}
  local entries = redis.call('HGETALL', KEYS[1])
  for i = 1, #entries, 2 do
    local tag = entries[i]
    if string.sub(tag, 1, #prefix) == prefix then
      again[#again + 1] = {tonumber(string.sub(tag, #prefix + 1)), tag, entries[i + 1]}
    end
  end
  table.sort(again, function(a, b) return a[1] < b[1] end)
  local taken = {}
  for _, entry in ipairs(again) do
    local value = entry[3]
    local cut = string.find(value, '\n', 1, true)
    local header = cjson.decode(string.sub(value, 1, cut - 1))
    taken[#taken + 1] = entry[2]
    taken[#taken + 1] = header[1]
    taken[#taken + 1] = header[2]
    taken[#taken + 1] = string.sub(value, cut + 1)
  end
  -- pcall: at maxmemory these writes are refused (nothing was freed first), and the messages must
  -- still be handed out; the next fetch or heartbeat renews the lease.
  redis.pcall('SET', KEYS[4], '1', 'PX', ARGV[4])
  redis.pcall('SADD', KEYS[5], ARGV[5])
  return {'', taken, 1}
end

-- Free before writing. At maxmemory (noeviction) Redis refuses a script's first write when it is one
-- that may grow memory (LPUSH, HSET, SET...), but not writes after a first one that shrinks it (ZREM,
-- RPOP): so every step below removes before it adds, and a full broker can still be drained.

local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[6]))
for _, member in ipairs(due) do
  local cut = string.find(member, '\n', 1, true)
  local header = cjson.decode(string.sub(member, 1, cut - 1))
  redis.call('ZREM', KEYS[3], member)
  redis.call('LPUSH', header[1], string.sub(member, cut + 1))
end

local limit = tonumber(ARGV[1])
local taken = {}
local n = 0
for i = 6, #KEYS do
  if n >= limit then break end
  local popped = redis.call('RPOP', KEYS[i], limit - n)
  if popped then
    for _, envelope in ipairs(popped) do
      n = n + 1
      local count = redis.call('HINCRBY', KEYS[2], redis.sha1hex(envelope), 1)
      local tag = ARGV[3] .. n
      redis.call('HSET', KEYS[1], tag, cjson.encode({KEYS[i], count}) .. '\n' .. envelope)
      taken[#taken + 1] = tag
      taken[#taken + 1] = KEYS[i]
      taken[#taken + 1] = count
      taken[#taken + 1] = envelope
    end
  end
end

if n > 0 then
  -- Taken and leased in one step: there is no moment when a message is held without a heartbeat.
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
  redis.call('SADD', KEYS[5], ARGV[5])
  -- Whether messages are left, so that an emptied queue is watched, not polled, by the next fetch.
  local more = 0
  for i = 6, #KEYS do
    if redis.call('LLEN', KEYS[i]) > 0 then
      more = 1
      break
    end
  end
  return {'', taken, more}
end
local soonest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
return {soonest[2] or '', taken}
