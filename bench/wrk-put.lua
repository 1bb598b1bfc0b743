-- PUT a 100-byte value under a random key of the keyspace, like redis-benchmark -t set -r.
local keyspace = tonumber(os.getenv("KEYSPACE") or "100000")
local value = string.rep("x", tonumber(os.getenv("VALUE_BYTES") or "100"))
math.randomseed(os.time() + 1)
request = function()
  return wrk.format("PUT", string.format("/v1/keys/key:%012d", math.random(0, keyspace - 1)), nil, value)
end
