-- Requeue ("requeue"), delete ("drop") or trim ("trim") dead letters.
--
-- KEYS[1] dead-letter list   KEYS[2] delivery counts   KEYS[3..] the lists letters go back to
-- requeue: ARGV[2*i], ARGV[2*i+1] = a dead-letter record, the index in KEYS of its list
-- drop:    ARGV[2..] = dead-letter records
-- trim:    ARGV[2] newest kept (-1: any number)   ARGV[3] oldest time kept ('': any age)   ARGV[4] most popped
--
-- A record is removed from the dead letters and pushed to its list in one step, and only when it was
-- still there, so two operators requeuing at once move each letter once. Records are unique: they carry
-- the time they were set aside. Returns how many letters were requeued or deleted; trim returns how many
-- went for their number and how many for their age (a caller pops again while the second is ARGV[4]).

local mode = ARGV[1]
local done = 0
if mode == 'requeue' then
  for i = 2, #ARGV, 2 do
    local record = ARGV[i]
    if redis.call('LREM', KEYS[1], -1, record) == 1 then
      local envelope = string.sub(record, string.find(record, '\n', 1, true) + 1)
      -- Pushed where producers push: behind what waits now. Its delivery count starts afresh.
      redis.call('LPUSH', KEYS[tonumber(ARGV[i + 1])], envelope)
      redis.call('HDEL', KEYS[2], redis.sha1hex(envelope))
      done = done + 1
    end
  end
elseif mode == 'drop' then
  for i = 2, #ARGV do
    done = done + redis.call('LREM', KEYS[1], -1, ARGV[i])
  end
else
  local keep = tonumber(ARGV[2])
  if keep >= 0 then
    local count = redis.call('LLEN', KEYS[1])
    if count > keep then
      if keep == 0 then
        redis.call('DEL', KEYS[1])
      else
        redis.call('LTRIM', KEYS[1], 0, keep - 1)
      end
      done = count - keep
    end
  end
  if ARGV[3] ~= '' then
    -- Oldest at the right end: pop while the oldest is too old, at most ARGV[4] per call.
    local cutoff = tonumber(ARGV[3])
    local most = tonumber(ARGV[4])
    local popped = 0
    while popped < most do
      local last = redis.call('LINDEX', KEYS[1], -1)
      if not last then break end
      local cut = string.find(last, '\n', 1, true)
      local info = cut and cjson.decode(string.sub(last, 1, cut - 1))
      if info and tonumber(info['time']) and tonumber(info['time']) >= cutoff then break end
      redis.call('RPOP', KEYS[1])
      popped = popped + 1
    end
    return {done, popped}
  end
  return {done, 0}
end
return done
