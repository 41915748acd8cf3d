--- Hostile neighbours for spec/35-neighbours_spec.lua and resource limits
-- for spec/36-limits_spec.lua: two real users, a sandbox laid out like a
-- shared machine, code run as a given user in a subprocess with a
-- deadline, and the fast neighbour tool (neighbour_tool.c) compiled once.
--
-- Everything happens under a sandbox directory of the spec's own: the
-- sandbox's "tmp" stands for /tmp and reaches the library only through
-- the `env` tables the specs pass, so no real user's token is looked at.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local M = {}

local quote = expect.quote

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

local function capture(cmd)
  local pipe = assert(io.popen(cmd, "r"))
  local out = pipe:read("a")
  local ok, how, code = pipe:close()
  return out, ok, how, code
end

-- The build the suite runs (TOKENPOLICY_TEST_BUILD, as spec/run.sh sets it).
local ROOT = assert(tp.cwd())
local VERSION = _VERSION:match("%d+%.%d+")
local BUILD = os.getenv("TOKENPOLICY_TEST_BUILD") or ("build/" .. VERSION)
if BUILD:sub(1, 1) ~= "/" then
  BUILD = ROOT .. "/" .. BUILD
end

--- The user whose tokens the specs handle and the neighbour who attacks
-- them, as `{name=, uid=, gid=}` each: created with useradd the first time
-- (no home, no login shell), reused afterwards.
-- @treturn table `{user=, neighbour=}`
function M.users()
  if M.cached_users then
    return M.cached_users
  end
  local out = {}
  for key, name in pairs({ user = "tpuser", neighbour = "tpneighbour" }) do
    local uid = capture("id -u " .. name .. " 2>/dev/null"):match("^(%d+)")
    if not uid then
      sh(("useradd --no-create-home --shell /usr/sbin/nologin --user-group %s"):format(name))
      uid = capture("id -u " .. name):match("^(%d+)")
    end
    local gid = capture("id -g " .. name):match("^(%d+)")
    out[key] = { name = name, uid = math.tointeger(tonumber(uid)), gid = math.tointeger(tonumber(gid)) }
  end
  M.cached_users = out
  return out
end

--- The neighbour tool, compiled into a temporary directory on first use.
-- @treturn string its path
function M.tool()
  if not M.tool_path then
    local dir = expect.new_dir()
    sh("chmod 755 " .. quote(dir))
    local path = dir .. "/neighbour_tool"
    -- (without the sanitizer preload of `make asan`: the compiler is not what it checks)
    sh(("env -u LD_PRELOAD cc -std=c99 -O2 -Wall -Wextra -Werror -o %s %s"):format(quote(path),
      quote(ROOT .. "/spec/helpers/neighbour_tool.c")))
    M.tool_path, M.tool_dir = path, dir
  end
  return M.tool_path
end

--- A sandbox like a shared machine: `dir` (root's, 0755, so both users
-- can pass), `tmp` (root's, 1777, like /tmp), a home for the user, and a
-- root-owned rucio.cfg naming `account`. `env` is the user's environment
-- for the library (LOGNAME, TMPDIR, RUCIO_CONFIG, HOME, XDG_RUNTIME_DIR:
-- the shared tmp, where bt_u<uid> is looked for).
-- @tparam table users from `users()`
-- @treturn table `{dir=, tmp=, home=, cfg=, env=, account=, base=, rucio=, token=, expiry=, bt=}`
function M.sandbox(users)
  local u = users.user
  local dir = expect.new_dir()
  local s = { dir = dir, tmp = dir .. "/tmp", home = dir .. "/home", cfg = dir .. "/rucio.cfg", account = "tpacct" }
  sh(("chmod 755 %s && mkdir -m 1777 %s && mkdir -m 700 %s && chown %d:%d %s"):format(quote(dir), quote(s.tmp),
    quote(s.home), u.uid, u.gid, quote(s.home)))
  expect.write_file(s.cfg, "[client]\naccount = " .. s.account .. "\nauth_type = userpass\n")
  sh("chmod 644 " .. quote(s.cfg))
  s.env = { LOGNAME = u.name, TMPDIR = s.tmp, RUCIO_CONFIG = s.cfg, HOME = s.home, XDG_RUNTIME_DIR = s.tmp }
  s.base = s.tmp .. "/" .. u.name
  s.rucio = s.base .. "/.rucio_" .. u.name
  s.token = s.rucio .. "/auth_token_for_account_" .. s.account
  s.expiry = s.rucio .. "/auth_token_exp_for_account_" .. s.account
  s.bt = s.tmp .. "/bt_u" .. u.uid
  return s
end

function M.remove(s)
  expect.remove_dir(s.dir)
end

--- Makes a directory (parents included) with an owner and a mode.
function M.mkdir(path, owner, mode)
  sh(("mkdir -p %s && chown %d:%d %s && chmod %s %s"):format(quote(path), owner.uid, owner.gid, quote(path),
    mode, quote(path)))
end

--- Writes a file with an owner and a mode (as root: a neighbour's file).
function M.file(path, text, owner, mode)
  expect.write_file(path, text)
  sh(("chown %d:%d %s && chmod %s %s"):format(owner.uid, owner.gid, quote(path), mode or "600", quote(path)))
end

--- A FIFO of owner at path.
function M.fifo(path, owner)
  sh(("mkfifo -m 600 %s && chown %d:%d %s"):format(quote(path), owner.uid, owner.gid, quote(path)))
end

--- A Unix socket of owner at path.
function M.socket(path, owner)
  sh(("env -u LD_PRELOAD %s socket %s && chown %d:%d %s"):format(quote(M.tool()), quote(path), owner.uid, owner.gid,
    quote(path)))
end

--- A symbolic link of owner at path, to target.
function M.link(target, path, owner)
  sh(("ln -s %s %s && chown -h %d:%d %s"):format(quote(target), quote(path), owner.uid, owner.gid, quote(path)))
end

--- What a victim's file or directory looks like: type, owner, mode, inode,
-- mtime to the nanosecond and, for a file, its contents. Compared before
-- and after an attack.
function M.fingerprint(path)
  local st = assert(tp.stat(path))
  local f = {
    type = st.type, uid = st.uid, mode = st.mode, ino = st.ino, mtime = st.mtime, mtime_ns = st.mtime_ns,
  }
  if st.type == "file" then
    f.text = expect.read_file(path)
  elseif st.type == "directory" then
    f.names = assert(tp.list_dir(path))
    f.entries = {}
    for _, name in ipairs(f.names) do
      f.entries[name] = M.fingerprint(path .. "/" .. name)
    end
  end
  return f
end

--- Starts the swapper (see neighbour_tool.c): in the directory `parent`,
-- `name` and the link `link` (to `victim`, owned by `link_owner`) trade
-- places in a tight loop; the real directory and `files` in it (holding
-- `token`) are made again for `dir_owner` whenever logout removed them
-- (whole, in `stage`: a private directory on the same file system).
-- Returns once the swapper is set up.
-- @treturn table a handle whose `stop()` ends the swapper (SIGTERM, then
--   SIGKILL after 10 s) and returns how many swaps it made; safe to call
--   twice
function M.swapper(o)
  local out = os.tmpname()
  local pidfile = os.tmpname()
  local args = { "env -u LD_PRELOAD", quote(M.tool()), "swap", quote(o.parent), quote(o.name), quote(o.link),
                 quote(o.victim), o.link_owner.uid, o.dir_owner.uid, quote(o.token), quote(o.stage) }
  for _, f in ipairs(o.files) do args[#args + 1] = quote(f) end
  sh(("%s >%s 2>&1 </dev/null & echo $! >%s"):format(table.concat(args, " "), quote(out), quote(pidfile)))
  local pid = assert(expect.read_file(pidfile):match("^(%d+)"))
  os.remove(pidfile)
  local handle, swaps = {}, nil
  local function wait_for(pattern)
    for _ = 1, 1000 do
      local text = expect.read_file(out, true)
      local found = text:match(pattern)
      if found then return found end
      if text:find("%a+: ") then error("neighbour_tool: " .. text) end
      os.execute("sleep 0.01")
    end
  end
  function handle.stop()
    if swaps == nil then
      os.execute("kill -TERM " .. pid .. " 2>/dev/null")
      local count = wait_for("ready\n(%d+)\n")
      if not count then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
      swaps = math.tointeger(tonumber(count)) or 0
      os.remove(out)
    end
    return swaps
  end
  if not wait_for("^ready\n") then
    handle.stop()
    error("neighbour_tool did not start")
  end
  return handle
end

--- Runs a Lua chunk in a new process, as `as` (a user from `users()`; nil
-- for root), with a deadline. The chunk sees `tp` and `arg` (the value
-- given, through JSON) and returns a value that JSON can carry back.
-- @tparam table|nil as
-- @tparam string code the chunk
-- @tparam any value its argument
-- @tparam[opt] number seconds the deadline (default 20)
-- @treturn any the chunk's value, or nil and "timeout" (the process was
--   killed at the deadline) or nil and what it printed
function M.run(as, code, value, seconds)
  local work = expect.new_dir()
  sh("chmod 755 " .. quote(work))
  local chunk = work .. "/chunk.lua"
  expect.write_file(chunk, code)
  expect.write_file(work .. "/arg.json", tp.json_encode({ value = value }))
  expect.write_file(work .. "/runner.lua", [[
local tp = require "tokenpolicy"
local f = assert(io.open(arg[1] .. "/arg.json", "rb"))
local input = tp.json_decode(f:read("a"))
f:close()
local env = setmetatable({ tp = tp, arg = input.value }, { __index = _G })
local chunk = assert(loadfile(arg[1] .. "/chunk.lua", "t", env))
io.write("\0RESULT\0", tp.json_encode({ value = chunk() }))
]])
  sh("chmod 644 " .. quote(chunk) .. " " .. quote(work .. "/arg.json") .. " " .. quote(work .. "/runner.lua"))
  local preload = os.getenv("LD_PRELOAD")
  local cmd = ("env -u LD_PRELOAD timeout -s KILL %d %s env %sLUA_PATH=%s LUA_CPATH=%s lua%s %s %s 2>&1"):format(
    seconds or 20, as and ("runuser -u " .. as.name .. " --") or "",
    preload and ("LD_PRELOAD=" .. quote(preload) .. " ") or "",
    quote(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"), quote(BUILD .. "/?.so;;"), VERSION,
    quote(work .. "/runner.lua"), quote(work))
  local out, _, how, status = capture(cmd)
  expect.remove_dir(work)
  local json = out:match("\0RESULT\0(.*)$")
  if json then
    return tp.json_decode(json).value
  end
  if how == "exit" and status == 137 then
    return nil, "timeout"
  end
  return nil, out
end

--- Runs `op` in a new process (as root) with a deadline and measures the
-- memory it takes: `setup` and `op` are chunks returning a function each;
-- setup(arg) makes the input (not measured), op(input, arg) returns a
-- table, to which `growth_mb` is added: the peak resident set (VmHWM,
-- reset through /proc/self/clear_refs just before op) less the resident
-- set before op, in MiB.
-- @treturn table|nil op's table, or nil and "timeout" or the output
function M.measure(setup, op, value, seconds)
  local code = [[
local function kb(field)
  for line in io.lines("/proc/self/status") do
    local v = line:match("^" .. field .. ":%s+(%d+) kB")
    if v then return math.tointeger(tonumber(v)) end
  end
end
local setup = (function() ]] .. setup .. [[ end)()
local op = (function() ]] .. op .. [[ end)()
local input = setup(arg)
collectgarbage()
collectgarbage()
local f = assert(io.open("/proc/self/clear_refs", "w"))
f:write("5")
f:close()
local base = kb("VmRSS")
local out = op(input, arg)
out.growth_mb = (kb("VmHWM") - base) // 1024
return out
]]
  return M.run(nil, code, value, seconds)
end

--- A local HTTP server (node) answering GET /<path> with the file
-- `<dir>/<path with every character but letters, digits, ".", "_" and
-- "-" made "_">` as application/json, 404 when there is none.
-- @treturn table `{base=, stop=}`
function M.serve(dir)
  local script = [[
const http = require('http'), fs = require('fs'), path = require('path');
const dir = process.argv[1];
const server = http.createServer((req, res) => {
  const name = new URL(req.url, 'http://x').pathname.replace(/[^A-Za-z0-9._-]/g, '_');
  fs.readFile(path.join(dir, name), (err, body) => {
    if (err) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(body);
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port + ' ' + process.pid));
]]
  local handle = assert(io.popen("exec env -u LD_PRELOAD node -e " .. quote(script) .. " " .. quote(dir), "r"))
  local port, pid = assert(handle:read("l")):match("^(%d+) (%d+)$")
  return {
    base = "http://127.0.0.1:" .. port,
    stop = function()
      os.execute("kill " .. pid)
      handle:close()
    end,
  }
end

return M
