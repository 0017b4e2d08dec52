-- Claim an entry's next tick, or mark the claimed tick done; fenced by the lease's token.
-- KEYS[1] the lease   KEYS[2] the entries' hash (field: entry name, value "<tick>|<done>|<sent>")
-- ARGV[1] entry name  ARGV[2] token  ARGV[3] "claim" or "finish" or "finish-sent"
-- claim: ARGV[4] expected tick ("" when the entry has no state), ARGV[5] the new tick, ARGV[6] done (0/1)
-- finish: ARGV[4] the claimed tick
-- Returns 1 when done, 0 when the tick moved or the token is no longer the lease's.
local current = redis.call('GET', KEYS[1])
if not current or string.match(current, '^(%d+):') ~= ARGV[2] then return 0 end
local tick, done, sent = '', '0', ''
local state = redis.call('HGET', KEYS[2], ARGV[1])
if state then tick, done, sent = string.match(state, '^(%d*)|(%d)|(%d*)$') end
if tick ~= ARGV[4] then return 0 end
if ARGV[3] == 'claim' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5] .. '|' .. ARGV[6] .. '|' .. sent)
elseif ARGV[3] == 'finish-sent' then
  redis.call('HSET', KEYS[2], ARGV[1], tick .. '|1|' .. tick)
else
  redis.call('HSET', KEYS[2], ARGV[1], tick .. '|1|' .. sent)
end
return 1
