-- PUT a VALUE_BYTES-byte value under every key of the keyspace in a random order, like
-- redis-benchmark -t set -r. Requests are built once in init() (see wrk-get.lua).
local keyspace = tonumber(os.getenv("KEYSPACE") or "100000")
local value = string.rep("x", tonumber(os.getenv("VALUE_BYTES") or "100"))
local requests = {}
local next_request = 1

function init(args)
  math.randomseed(os.time() + 1)
  for i = 1, keyspace do
    requests[i] = wrk.format("PUT", string.format("/v1/keys/key:%012d", i - 1), nil, value)
  end
  for i = keyspace, 2, -1 do
    local j = math.random(i)
    requests[i], requests[j] = requests[j], requests[i]
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request % keyspace + 1
  return r
end
