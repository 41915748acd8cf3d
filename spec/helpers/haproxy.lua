-- Real HAProxy for integration specs: Debian's haproxy (2.6, Lua 5.3) runs
-- examples/haproxy/haproxy.cfg on 127.0.0.1 at a free port, with the
-- checkout's Lua modules and the Lua 5.3 build of the core, whichever Lua
-- runs busted.
--
--   local haproxy = require "helpers.haproxy"
--   local dir = haproxy.sandbox()                 -- keys, denylist, sockets go here
--   local h = haproxy.start{ dir = dir, mode = "lua-load-per-thread",
--                            settings = { KEYS_FILE = dir .. "/keys.jwks", ISS = "...", ... } }
--   local status, headers, body = haproxy.get(h, { authorization = "Bearer ..." })
--   haproxy.stop(h)                                -- also removes dir
--
-- `settings` are the TOKENPOLICY_<name> variables the example reads (see
-- its `presetenv` lines); a setting not given keeps the example's default.
-- HAProxy runs in the foreground (-db) in the background of a shell, so
-- its stderr (where core.Warning also goes) is in h.log.
local haproxy = {}

local START_TIMEOUT = 10 -- seconds until HAProxy answers
local SETTINGS = { "KEYS_FILE", "JWKS_URI", "ISS", "AUD", "ALGS", "LEEWAY", "MAX_TOKEN_LIFETIME", "ARVADOS_CONFIG",
  "DENYLIST", "HEADER", "CACHE_SIZE", "RELOAD_EVERY", "MIN_REFETCH", "REALM", "SCOPE", "NBTHREAD",
  -- a fleet's (helpers.fleet): a Redis denylist and its file fallback
  "DENYLIST_FILE", "SYNC_EVERY", "REDIS_PASSWORD_FILE", "REDIS_CA_FILE" }
local expect = require "helpers.expect"

-- The checkout (the working directory of busted, as spec/run.sh runs it).
local ROOT = require("tokenpolicy").cwd()
haproxy.example = ROOT .. "/examples/haproxy/haproxy.cfg"

--- The directory holding tokenpolicy/core.so for Lua 5.3 (HAProxy's Lua):
-- the sibling "5.3" of the build the specs run with (spec/run.sh sets
-- TOKENPOLICY_TEST_BUILD, e.g. build/5.4 or build-asan/5.4).
function haproxy.build_dir()
  local build = os.getenv("TOKENPOLICY_TEST_BUILD") or ("build/" .. _VERSION:match("%d+%.%d+"))
  local dir = build:gsub("/?[^/]*$", "") .. "/5.3"
  if dir:sub(1, 1) == "/" then
    return dir
  end
  return ROOT .. "/" .. (dir:gsub("^/", ""))
end

local quote, spit = expect.quote, expect.write_file
-- HAProxy's log and pid files may not exist yet: they read as "".
local function slurp(path)
  return expect.read_file(path, true)
end
haproxy.write = spit

--- Sleeps a fraction of a second.
function haproxy.sleep(seconds)
  os.execute("sleep " .. seconds)
end

--- Calls fn every `step` seconds until it returns a true value (returned),
-- or raises after `timeout` seconds with `what` and fn's last second value.
function haproxy.wait_for(what, fn, timeout, step)
  step = step or 0.1
  local deadline = os.time() + (timeout or 10)
  local last
  repeat
    local ok, why = fn()
    if ok then return ok end
    last = why
    haproxy.sleep(step)
  until os.time() > deadline
  error(("waited %d s for %s in vain%s"):format(timeout or 10, what, last and (": " .. tostring(last)) or ""), 2)
end

--- A private temporary directory (0700) for one HAProxy's files.
function haproxy.sandbox()
  local pipe = assert(io.popen("env -u LD_PRELOAD mktemp -d /tmp/tp-haproxy.XXXXXX"))
  local dir = assert(pipe:read("l"))
  pipe:close()
  return dir
end

-- True while the process runs (a zombie counts as ended).
local function alive(pid)
  local text = slurp("/proc/" .. pid .. "/stat")
  local state = text:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

--- The example configuration for a mode: "lua-load" (as written) or
-- "lua-load-per-thread" (its lua-load line switched).
function haproxy.config(mode)
  local text = slurp(haproxy.example)
  if mode == "lua-load-per-thread" then
    local count
    text, count = text:gsub("\n    lua%-load \"", "\n    lua-load-per-thread \"")
    assert(count == 1, "the example has no lua-load line to switch")
  else
    assert(mode == nil or mode == "lua-load", "unknown mode " .. tostring(mode))
  end
  return text
end

-- The environment of HAProxy: paths to the checkout and the 5.3 build,
-- the sandbox, the address, and each setting given (the others unset, so
-- the example's presetenv defaults apply).
local function environment(opts, port)
  local build = haproxy.build_dir()
  assert(io.open(build .. "/tokenpolicy/core.so"), "HAProxy needs the Lua 5.3 build: run make (" .. build .. ")")
    :close()
  -- Under `make asan` HAProxy inherits the sanitizer preload (the core it
  -- loads is instrumented); HAProxy's own allocations, not freed at exit,
  -- are not what that run checks.
  local asan = os.getenv("ASAN_OPTIONS")
  local parts = {
    "ASAN_OPTIONS=" .. quote((asan and asan ~= "" and asan .. ":" or "") .. "detect_leaks=0"),
    "TOKENPOLICY_HAPROXY_DIR=" .. quote(ROOT .. "/examples/haproxy"),
    "TOKENPOLICY_LUA_DIR=" .. quote(ROOT .. "/lua"),
    "TOKENPOLICY_BUILD=" .. quote(build),
    "TOKENPOLICY_RUN_DIR=" .. quote(opts.dir),
    "TOKENPOLICY_BIND=" .. quote("127.0.0.1:" .. (port or 8080)),
  }
  local settings = opts.settings or {}
  for _, name in ipairs(SETTINGS) do
    if settings[name] ~= nil then
      parts[#parts + 1] = "TOKENPOLICY_" .. name .. "=" .. quote(settings[name])
    else
      table.insert(parts, 1, "-u TOKENPOLICY_" .. name)
    end
  end
  for name in pairs(settings) do
    local known = false
    for _, n in ipairs(SETTINGS) do known = known or n == name end
    assert(known, "unknown setting " .. name)
  end
  return "env " .. table.concat(parts, " ")
end

--- Runs `haproxy -c` on the example (in a mode) with the given settings.
-- @treturn boolean whether HAProxy accepted it
-- @treturn string its output
function haproxy.check(opts)
  local cfg = opts.dir .. "/haproxy.cfg"
  spit(cfg, haproxy.config(opts.mode))
  local pipe = assert(io.popen(environment(opts) .. " haproxy -c -f " .. quote(cfg) .. " 2>&1"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok == true, out
end

local function start_once(opts, port)
  local cfg = opts.dir .. "/haproxy.cfg"
  local log = opts.dir .. "/haproxy.log"
  local pidfile = opts.dir .. "/haproxy.pid"
  spit(cfg, haproxy.config(opts.mode))
  os.remove(log)
  assert(os.execute("{ " .. environment(opts, port) .. " haproxy -db -f " .. quote(cfg) .. " >" .. quote(log)
    .. " 2>&1 </dev/null & echo $! >" .. quote(pidfile) .. "; }"))
  local pid = assert(slurp(pidfile):match("^(%d+)"), "no pid for haproxy")
  -- Lua states: one per thread with lua-load-per-thread, else one.
  local states = opts.mode == "lua-load-per-thread" and tonumber((opts.settings or {}).NBTHREAD or 1) or 1
  local h = { pid = pid, port = port, dir = opts.dir, log = log, base = "http://127.0.0.1:" .. port, states = states }
  local step = 0.05
  for _ = 1, START_TIMEOUT / step do
    if not alive(pid) then
      return nil, slurp(log)
    end
    -- Ready once it answers HTTP at all (401: no token).
    local status = haproxy.get(h, {}, { max_time = 1 })
    if status then
      return h
    end
    haproxy.sleep(step)
  end
  local output = slurp(log)
  haproxy.stop(h)  -- removes the sandbox too: the error carries the log
  error("haproxy did not answer within " .. START_TIMEOUT .. " s:\n" .. output, 3)
end

--- Starts HAProxy on a free port: opts.dir (a sandbox), opts.mode,
-- opts.settings. Returns `{ pid=, port=, base=, dir=, log=, states= }`
-- (states: the number of Lua states, each of which logs its reloads).
-- When HAProxy does not start, the sandbox is removed and the error holds
-- HAProxy's output.
function haproxy.start(opts)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  local why
  for _ = 1, 8 do
    local port = math.random(20000, 59999)
    local h, log = start_once(opts, port)
    if h then
      return h
    end
    why = log
    -- Another process had the port: try another one.
    if not log:find("cannot bind socket", 1, true) then break end
  end
  os.execute("rm -rf " .. quote(opts.dir))  -- the error carries the log
  error("haproxy did not start:\n" .. tostring(why), 2)
end

--- Stops HAProxy and waits until it has ended; removes the sandbox unless
-- keep_dir.
function haproxy.stop(h, keep_dir)
  if not h or h.stopped then return end
  h.stopped = true
  os.execute("kill " .. h.pid .. " 2>/dev/null")
  for i = 1, 100 do
    if not alive(h.pid) then break end
    if i == 60 then os.execute("kill -9 " .. h.pid .. " 2>/dev/null") end
    haproxy.sleep(0.05)
  end
  if not keep_dir then
    os.execute("rm -rf " .. quote(h.dir))
  end
end

--- HAProxy's output so far (its stderr: core.Warning lines among others).
function haproxy.output(h)
  return slurp(h.log)
end

--- Counts the occurrences of plain `text` in HAProxy's output.
function haproxy.count(h, text)
  local output, n, at = slurp(h.log), 0, 1
  while true do
    local s, e = output:find(text, at, true)
    if not s then return n end
    n, at = n + 1, e + 1
  end
end

--- A GET request with curl (Debian's), headers given as a table.
-- @treturn ?integer the status (nil when there was no answer)
-- @treturn table the answer's headers, names in lower case
-- @treturn string the body
function haproxy.get(h, headers, opts)
  opts = opts or {}
  local args = { "env -u LD_PRELOAD curl -s -D - --max-time", tostring(opts.max_time or 5) }
  for name, value in pairs(headers or {}) do
    args[#args + 1] = "-H " .. quote(name .. ": " .. value)
  end
  args[#args + 1] = quote(h.base .. (opts.path or "/"))
  local pipe = assert(io.popen(table.concat(args, " ") .. " 2>/dev/null"))
  local text = pipe:read("a")
  pipe:close()
  local head, body = text:match("^(.-)\r\n\r\n(.*)$")
  if not head then return nil, {}, text end
  local status = math.tointeger(tonumber(head:match("^HTTP/%S+ (%d+)")))
  local got = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
    got[name:lower()] = value
  end
  return status, got, body
end

return haproxy
