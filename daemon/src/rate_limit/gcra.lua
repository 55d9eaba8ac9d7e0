-- One GCRA step for one key, decided in the Redis that every daemon of the fleet shares
-- (heare-authd, daemon/src/rate_limit/redis.rs, which runs it by EVALSHA). The same arithmetic as
-- the one-host limiter (daemon/src/keyset/limits.rs), in whole microseconds on Redis's own clock
-- (TIME), so that all daemons measure on one clock. Lua's numbers are doubles, exact below 2^53;
-- the daemon keeps the interval and the tolerance below 2^51 µs and now is about 1.7e15 µs.
--
-- KEYS[1]  the key's theoretical arrival time (TAT), µs since the epoch; absent: a full bucket
-- ARGV[1]  the interval, µs between two requests at the sustained rate (at least 1)
-- ARGV[2]  the tolerance, µs the TAT may run ahead of now: burst intervals
--
-- Returns {allowed (1 or 0), ahead, retry_after}: how far (µs) the TAT runs ahead of now after the
-- decision, and how long until one more request would be accepted (0 when allowed). A refusal
-- writes nothing (but for a TAT brought down to this limit's bound); an acceptance stores the new TAT with an expiry at the moment it passes (the
-- bucket is full again then, and a missing key means exactly that), so idle keys vanish.
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then
  tat = now
end
-- A TAT further ahead than this limit allows (left by a longer limit of the same key) is taken as
-- an empty bucket of this limit, so a changed limit never locks a key out for the old one's period.
local clamped = false
if tat > now + tolerance then
  tat = now + tolerance
  clamped = true
end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > tolerance then
  if clamped then
    -- Kept at this limit's bound, so the bucket refills at this limit's rate from now on.
    redis.call('SET', KEYS[1], string.format('%.0f', tat),
      'PX', string.format('%.0f', math.ceil((tat - now) / 1000) + 1))
  end
  return {0, tat - now, ahead - tolerance}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', string.format('%.0f', math.ceil(ahead / 1000)))
return {1, ahead, 0}
