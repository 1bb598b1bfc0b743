-- GET a random key of the preloaded keyspace (key:000000000000 .. KEYSPACE-1).
local keyspace = tonumber(os.getenv("KEYSPACE") or "100000")
math.randomseed(os.time())
request = function()
  return wrk.format("GET", string.format("/v1/keys/key:%012d", math.random(0, keyspace - 1)))
end
