-- Settle deliveries of one consumer: ack, requeue, release (requeue uncounted) or bury (dead-letter).
--
-- KEYS[1] processing hash   KEYS[2] delivery counts   KEYS[3] dead-letter list
-- ARGV[1] mode  ARGV[2] queue  ARGV[3] reason  ARGV[4] time (unix s)  ARGV[5..] delivery tags
--
-- A tag no longer in the hash (recovered after this consumer was taken for dead) is left alone, so a
-- late ack never touches a message another consumer now holds. Returns how many tags were settled.

local mode = ARGV[1]
local settled = 0
for i = 5, #ARGV do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  if value then
    local cut = string.find(value, '\n', 1, true)
    local header = cjson.decode(string.sub(value, 1, cut - 1))
    local envelope = string.sub(value, cut + 1)
    local sum = redis.sha1hex(envelope)
    -- Removed before anything is added: at maxmemory Redis refuses a script whose first write may grow
    -- memory, so a full broker could take no ack, requeue or dead letter (see fetch.lua).
    redis.call('HDEL', KEYS[1], ARGV[i])
    if mode == 'requeue' or mode == 'release' then
      -- The right end is where consumers take from: a message given back is taken next.
      redis.call('RPUSH', header[1], envelope)
      if mode == 'release' and redis.call('HINCRBY', KEYS[2], sum, -1) <= 0 then
        redis.call('HDEL', KEYS[2], sum)
      end
    else
      redis.call('HDEL', KEYS[2], sum)
      if mode == 'bury' then
        local record = cjson.encode({queue = ARGV[2], reason = ARGV[3], time = ARGV[4]})
        redis.call('LPUSH', KEYS[3], record .. '\n' .. envelope)
      end
    end
    settled = settled + 1
  end
end
return settled
