-- GET every key of the preloaded keyspace (key:000000000000 .. KEYSPACE-1) in a random
-- order. The requests are built once in init(): building one per call in Lua costs wrk
-- more CPU than redis-benchmark spends, and would measure wrk instead of the server.
local keyspace = tonumber(os.getenv("KEYSPACE") or "100000")
local requests = {}
local next_request = 1

function init(args)
  math.randomseed(os.time() + (tonumber(tostring(requests):match("0x(%x+)"), 16) or 0))
  for i = 1, keyspace do
    requests[i] = wrk.format("GET", string.format("/v1/keys/key:%012d", i - 1))
  end
  for i = keyspace, 2, -1 do -- Fisher-Yates shuffle: uniform over the keyspace
    local j = math.random(i)
    requests[i], requests[j] = requests[j], requests[i]
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request % keyspace + 1
  return r
end
