-- Which delivery tags one consumer still holds, renewing its heartbeat when it holds any.
--
-- KEYS[1] processing hash   KEYS[2] heartbeat key   KEYS[3] consumer set
-- ARGV[1] lease (ms)   ARGV[2] consumer id   ARGV[3..] delivery tags
--
-- A tag gone from the hash was given back after the consumer was taken for dead (its heartbeat ran
-- out while it was paused or cut off): another consumer may run it now. The check and the renewal are
-- one step, so recover.lua cannot give back a tag between them. Returns 1 or 0 per tag, in order.

local held = {}
local any = false
for i = 3, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    held[#held + 1] = 1
    any = true
  else
    held[#held + 1] = 0
  end
end
if any then
  -- PEXPIRE first: it is taken at maxmemory, where SET is refused (see the heartbeat in broker.py).
  if redis.call('PEXPIRE', KEYS[2], ARGV[1]) == 0 then
    redis.pcall('SET', KEYS[2], '1', 'PX', ARGV[1])
  end
  redis.pcall('SADD', KEYS[3], ARGV[2])
end
return held
