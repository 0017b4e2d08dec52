-- Count ("size") or delete ("purge") the waiting and delayed messages of one queue.
--
-- KEYS[1] delivery counts   KEYS[2] delayed zset   KEYS[3..] the queue's lists
-- ARGV[1] mode
--
-- Delayed messages of every queue share one zset, so finding one queue's is a scan of it.

local purge = ARGV[1] == 'purge'
local lists = {}
local total = 0
for i = 3, #KEYS do
  lists[KEYS[i]] = true
  if purge then
    for _, envelope in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
      redis.call('HDEL', KEYS[1], redis.sha1hex(envelope))
      total = total + 1
    end
    redis.call('DEL', KEYS[i])
  else
    total = total + redis.call('LLEN', KEYS[i])
  end
end
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local cut = string.find(member, '\n', 1, true)
  if lists[cjson.decode(string.sub(member, 1, cut - 1))[1]] then
    total = total + 1
    if purge then
      redis.call('ZREM', KEYS[2], member)
    end
  end
end
return total
