-- End a chord whose body was sent: delete its parts and leave "done" in the claim key, so late copies
-- of header tasks (ours or a Celery worker's) are ignored. Only the claim's holder may do it.
--
-- KEYS[1] <group key>.c  KEYS[2..5] <group key>.j .t .s .d
-- ARGV[1] the claim's token  ARGV[2] how long "done" is kept, in s
--
-- Returns 1 when the chord was ended, 0 when the claim had passed to someone else.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
return 1
