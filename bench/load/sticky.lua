-- The "sticky" workload: tools/call POSTs spread round-robin over established MCP sessions.
--
-- wrk -s bench/load/sticky.lua URL -- SESSIONS_FILE [TOOL] [EVENTS]
--   SESSIONS_FILE  one Mcp-Session-Id per line, as returned through the proxy under test
--   TOOL           "echo" (JSON answer, default) or "stream" (SSE answer of EVENTS events)
--
-- Requests are formatted once in init(): wrk then only cycles through a table, so the load
-- generator spends its time on sockets, not in Lua. Bodies are 400-2000 bytes (a spread of
-- sizes, as real tool arguments have), each session id appears with many body sizes.
-- No response() callback: defining one makes wrk parse every body in Lua. wrk counts non-2xx
-- answers itself, and the backend answers 404 to an unknown session id.

local requests = {}
local counter = 0

local function body_of(id, size, tool, events)
  local head = '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"'
    .. tool .. '","arguments":{"events":' .. events .. ',"text":"'
  local tail = '"}}}'
  local pad = size - #head - #tail
  if pad < 0 then pad = 0 end
  return head .. string.rep("a", pad) .. tail
end

function init(args)
  local sessions = {}
  for line in io.lines(args[1]) do
    if #line > 0 then sessions[#sessions + 1] = line end
  end
  assert(#sessions > 0, "no session ids in " .. tostring(args[1]))
  local tool = args[2] or "echo"
  local events = tonumber(args[3] or "10")
  local count = math.max(#sessions * 8, 512)
  for i = 0, count - 1 do
    local size = 400 + (i * 389) % 1601          -- 400..2000 bytes, well spread
    local headers = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["MCP-Protocol-Version"] = "2025-06-18",
      ["Mcp-Session-Id"] = sessions[(i % #sessions) + 1],
    }
    requests[i + 1] = wrk.format("POST", nil, headers, body_of(i + 1, size, tool, events))
  end
  -- each wrk thread starts at its own place in the cycle
  counter = (math.floor(os.clock() * 1e6) + #tostring({})) % #requests
end

function request()
  counter = counter + 1
  if counter > #requests then counter = 1 end
  return requests[counter]
end
