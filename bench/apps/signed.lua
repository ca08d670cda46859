-- Replays requests signed in advance (each with its own nonce), one after another.
-- The file (SIGNED_REQUESTS) holds "<length>\n<raw request>" records.
local requests = {}
local index = 0

function init(args)
  local f = assert(io.open(os.getenv("SIGNED_REQUESTS"), "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = string.find(data, "\n", pos, true)
    local n = tonumber(string.sub(data, pos, nl - 1))
    requests[#requests + 1] = string.sub(data, nl + 1, nl + n)
    pos = nl + n + 1
  end
end

function request()
  index = index + 1
  if index > #requests then index = 1 end -- a replay is refused: sign enough of them
  return requests[index]
end
