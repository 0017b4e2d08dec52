-- Take or renew the beat's leader lease; release it.
-- KEYS[1] the lease (value "<token>:<holder>")   KEYS[2] the token counter
-- ARGV[1] holder   ARGV[2] lease in ms, or "release" with ARGV[3] the token to give up
-- Returns the holder's fencing token, or false while another holder's lease runs.
local current = redis.call('GET', KEYS[1])
if ARGV[2] == 'release' then
  if current == ARGV[3] .. ':' .. ARGV[1] then redis.call('DEL', KEYS[1]) end
  return false
end
if current then
  local token, holder = string.match(current, '^(%d+):(.*)$')
  if holder ~= ARGV[1] then return false end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(token)
end
-- A new holder (or the same one after its lease ran out) gets a token no earlier holder had.
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2])
return token
