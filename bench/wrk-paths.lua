-- GET string.format(PATH_FORMAT, i) for i in 0 .. KEYSPACE-1, in a random order; the
-- requests are built once in init(), as in wrk-get.lua, so that wrk's own CPU per
-- request is the same whatever server it drives.
local keyspace = tonumber(os.getenv("KEYSPACE") or "1000")
local path_format = os.getenv("PATH_FORMAT") or "/item/%d"
local requests = {}
local next_request = 1

function init(args)
  math.randomseed(os.time() + (tonumber(tostring(requests):match("0x(%x+)"), 16) or 0))
  for i = 1, keyspace do
    requests[i] = wrk.format("GET", string.format(path_format, i - 1))
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
