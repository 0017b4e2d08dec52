-- Take a unique task's key unless a task holds it; or let it go if a given task holds it.
-- KEYS[1] the key   ARGV[1] the task id   ARGV[2] the window in ms, or "release"
-- hold: returns the id of the task holding the key after the call (ARGV[1] when this call took it).
if ARGV[2] == 'release' then
  if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return ARGV[1]
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
return redis.call('GET', KEYS[1])
