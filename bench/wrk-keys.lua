-- GET the keys listed one per line in the file $KEYS_FILE, cycling in order.
local requests = {}
local next_request = 1

function init(args)
  for key in io.lines(os.getenv("KEYS_FILE")) do
    requests[#requests + 1] = wrk.format("GET", "/v1/keys/" .. key)
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end
