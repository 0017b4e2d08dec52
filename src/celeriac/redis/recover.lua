-- Give every message a consumer holds back to its list, if that consumer is dead (or closing).
--
-- KEYS[1] consumer set   KEYS[2] the consumer's heartbeat key   KEYS[3] its processing hash
-- ARGV[1] consumer id    ARGV[2] "1" when the consumer closes itself, else "0"
--
-- The heartbeat is checked here, inside the script, so two consumers racing to recover the same dead
-- one cannot both move its messages. Delivery counts stay as they are. Returns how many messages
-- moved, or -1 when the consumer turned out to be alive.

if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local entries = redis.call('HGETALL', KEYS[3])
-- Removed before the messages are pushed back: at maxmemory Redis refuses a script whose first write may
-- grow memory (see fetch.lua).
redis.call('DEL', KEYS[3])
for i = 2, #entries, 2 do
  local value = entries[i]
  local cut = string.find(value, '\n', 1, true)
  local header = cjson.decode(string.sub(value, 1, cut - 1))
  redis.call('RPUSH', header[1], string.sub(value, cut + 1))
end
redis.call('SREM', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[2])
end
return #entries / 2
