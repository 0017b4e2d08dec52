-- Give back one message a Celery worker took and never acked (kombu's ack emulation), if it is still
-- there exactly as read.
--
-- KEYS[1] kombu's unacked hash   KEYS[2] its index (zset of delivery tags)   KEYS[3..] lists to push to
-- ARGV[1] delivery tag   ARGV[2] the hash value as read   ARGV[3] the envelope to push
--
-- The compare makes this safe beside Celery workers doing the same sweep, or acking meanwhile.

if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
-- Removed before pushed back: at maxmemory Redis refuses a script whose first write may grow memory.
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
for i = 3, #KEYS do
  -- The taking end, as kombu restores: a message given back is taken next.
  redis.call('RPUSH', KEYS[i], ARGV[3])
end
return 1
