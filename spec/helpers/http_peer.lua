--- Starts and stops spec/helpers/http_peer.js, the scripted local Node
-- server that records every request in a log file.
local peer = {}

--- Starts a peer on 127.0.0.1 at a free port: `{port=, pid=, log=, base=}`.
function peer.start()
  local log = os.tmpname()
  -- Without the sanitizer preload of `make asan`: node is not what it checks.
  local handle = assert(io.popen("exec env -u LD_PRELOAD node spec/helpers/http_peer.js " .. log, "r"))
  local port, pid = assert(handle:read("l")):match("^(%d+) (%d+)$")
  return { handle = handle, port = port, pid = pid, log = log, base = "http://127.0.0.1:" .. port }
end

--- Stops a peer and removes its log.
function peer.stop(p)
  os.execute("kill " .. p.pid)
  p.handle:close()
  os.remove(p.log)
end

return peer
