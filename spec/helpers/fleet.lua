-- A fleet for integration specs: N real HAProxy gateways (Debian's haproxy,
-- each its own process, port and sandbox, running examples/haproxy/haproxy.cfg)
-- sharing one real redis-server (helpers.redis).
--
--   local fleet = require "helpers.fleet"
--   local srv = fleet.redis_start{ password = "..." }  -- helpers.redis, persistent
--   local gws = fleet.start(3, { mode = "lua-load", settings = { KEYS_FILE = ..., DENYLIST = srv:url("/0"),
--     REDIS_PASSWORD_FILE = srv.password_file } })
--   local status = haproxy.get(gws[1], { authorization = "Bearer ..." })
--   fleet.stop(gws); fleet.redis_stop(srv)
--
-- The gateways are started by spec/helpers/haproxy.lua (same example, same
-- environment variables, the fleet's among them: DENYLIST_FILE, SYNC_EVERY,
-- REDIS_PASSWORD_FILE and REDIS_CA_FILE, which the example's lua-load file
-- reads).
local haproxy = require "helpers.haproxy"
local redis = require "helpers.redis"
local expect = require "helpers.expect"

local fleet = {}

local quote = expect.quote

--- The current time in seconds, with fractions (for latencies).
function fleet.now()
  -- Without the sanitizer preload of `make asan`: coreutils' date leaks,
  -- and LeakSanitizer aborts it.
  local pipe = assert(io.popen("env -u LD_PRELOAD date +%s.%N"))
  local t = tonumber(pipe:read("l"))
  pipe:close()
  return t
end

-- Redis ---------------------------------------------------------------------

--- Starts a redis-server with helpers.redis (127.0.0.1, a free port, the
-- append-only file on, as docs/haproxy.md asks of a fleet's Redis, so
-- fleet.redis_up finds the revocations again), with a password and a
-- file holding it (`password_file`, mode 0600) for the gateways.
-- @treturn table helpers.redis's server (`port`, `password`, `url(...)`,
--   `cli(...)`) with `password_file`
function fleet.redis_start(opts)
  opts = opts or {}
  local srv = redis.start { password = opts.password, persist = true, tls = opts.tls }
  if srv.password then
    srv.password_file = srv.dir .. "/gateway.password"
    expect.write_file(srv.password_file, srv.password .. "\n")
    os.execute("chmod 600 " .. quote(srv.password_file))  -- the core refuses one others may read
  end
  return srv
end

--- Stops the server, keeping its data for fleet.redis_up.
function fleet.redis_down(srv)
  srv:halt()
end

--- Starts the server again on the same port with the same data.
function fleet.redis_up(srv)
  local ok, err = srv:start_server()
  assert(ok, "redis-server did not start again: " .. tostring(err))
end

--- Stops the server and removes its directory.
function fleet.redis_stop(srv)
  if srv then srv:stop() end
end

-- HAProxy gateways -----------------------------------------------------------

--- Starts one gateway as helpers.haproxy starts one: opts.mode
-- ("lua-load" or "lua-load-per-thread"), opts.settings (TOKENPOLICY_<name>
-- values, the fleet's included), opts.dir (default: a new sandbox).
-- haproxy.get, haproxy.stop, haproxy.output and haproxy.count work on it.
function fleet.start_gateway(opts)
  return haproxy.start { mode = opts.mode, settings = opts.settings, dir = opts.dir or haproxy.sandbox() }
end

--- Starts n gateways with the same options, each in its own sandbox.
function fleet.start(n, opts)
  local list = {}
  for i = 1, n do
    local ok, h = pcall(fleet.start_gateway, opts)
    if not ok then
      fleet.stop(list)
      error(h, 2)
    end
    list[i] = h
  end
  return list
end

--- Stops every gateway of a list (and removes their sandboxes).
function fleet.stop(list)
  for _, h in ipairs(list or {}) do
    haproxy.stop(h)
  end
end

-- One round of polls: every pending gateway asked at once (curl in
-- parallel, one shell for all), and the time when all had answered.
local function poll(list, pending, headers)
  local words = {}
  for name, value in pairs(headers or {}) do
    words[#words + 1] = "-H " .. quote(name .. ": " .. value)
  end
  local parts = {}
  for i, h in ipairs(list) do
    if pending[i] then
      parts[#parts + 1] = ("curl -s -o /dev/null --max-time 1 -w '%d %%{http_code}\\n' %s %s &"):format(i,
        table.concat(words, " "), quote(h.base .. "/"))
    end
  end
  local pipe = assert(io.popen("env -u LD_PRELOAD sh -c " .. quote(table.concat(parts, " ")
    .. " wait; date +%s.%N") .. " 2>/dev/null"))
  local out = pipe:read("a")
  pipe:close()
  local got = {}
  for i, code in out:gmatch("(%d+) (%d+)\n") do
    got[tonumber(i)] = tonumber(code)
  end
  return got, tonumber(out:match("(%d+%.%d+)%s*$"))
end

--- Polls every gateway with `headers` until each answers `status`
-- `streak` times in a row (default 4: with lua-load-per-thread each thread
-- has its own view, and HAProxy spreads new connections over its
-- threads): returns the seconds from `since` (fleet.now()) to the first
-- answer of the last gateway's streak, or raises after `timeout` seconds
-- naming the gateways that did not.
function fleet.wait_all(list, headers, status, since, timeout, streak)
  streak = streak or 4
  local pending, run, first = {}, {}, {}
  for i = 1, #list do pending[i], run[i] = true, 0 end
  local deadline = since + (timeout or 5)
  while true do
    local got, now = poll(list, pending, headers)
    local left = 0
    for i in pairs(pending) do
      if got[i] == status then
        run[i] = run[i] + 1
        if run[i] == 1 then first[i] = now end
      else
        run[i] = 0
      end
      if run[i] >= streak then pending[i] = nil else left = left + 1 end
    end
    if left == 0 then
      local last = since
      for i = 1, #list do last = math.max(last, first[i]) end
      return last - since
    end
    if now > deadline then
      local names = {}
      for i in pairs(pending) do names[#names + 1] = "gateway " .. i end
      table.sort(names)
      error(("not every gateway answered %d within %g s: %s"):format(status, timeout or 5,
        table.concat(names, ", ")), 2)
    end
  end
end

return fleet
