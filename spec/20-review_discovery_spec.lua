-- What the outside review of discovery found (issue 8), one block per
-- finding. Every case runs in a sandbox directory with an explicit `env`
-- table; what could hang runs in a child process with a time limit, so a
-- regression fails instead of stopping the suite.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"
local discover = require("tokenpolicy.discovery").discover

local LUA = "lua" .. _VERSION:match("%d+%.%d+")

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

local function write(path, text)
  sh("mkdir -p " .. quote(path:match("^(.*)/")))
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function fifo(path)
  sh("mkdir -p " .. quote(path:match("^(.*)/")) .. " && mkfifo -m 0666 " .. quote(path))
end

-- Runs a Lua script in a child process (the same Lua, module paths and
-- sanitizer settings), killed after `limit` seconds. Returns its output
-- and the milliseconds it took.
local function child(script, limit, env_prefix)
  local cmd = ("s=$(date +%%s%%N); %s timeout -s KILL %d %s -e %s 2>&1; echo \"rc=$?\"; "
    .. "echo \"ms=$(( ($(date +%%s%%N) - s) / 1000000 ))\""):format(env_prefix or "", limit, LUA, quote(script))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  local ms = tonumber(out:match("ms=(%d+)\n$"))
  return out:gsub("ms=%d+\n$", ""), ms
end

local dir
before_each(function() dir = expect.new_dir() end)
after_each(function()
  expect.remove_dir(dir)
  collectgarbage()
end)

describe("discover and FIFOs planted at candidate paths", function()
  local uid, tmp_file
  before_each(function()
    -- /tmp/bt_u<uid> is a real path: a uid nobody has, checked free.
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    uid = math.random(3000000000, 3999999999)
    tmp_file = "/tmp/bt_u" .. uid
    assert.is_nil(tp.stat(tmp_file), tmp_file .. " already exists")
  end)
  after_each(function() os.remove(tmp_file) end)

  -- Each case: the paths that become FIFOs, and the env discover gets.
  local cases = {
    { name = "/tmp/bt_u<uid> (another local user can make it)", fifos = { "TMPFILE" }, env = {} },
    { name = "$XDG_RUNTIME_DIR/bt_u<uid>", fifos = { "DIR/xdg/bt_uUID" }, env = { XDG_RUNTIME_DIR = "DIR/xdg" } },
    { name = "BEARER_TOKEN_FILE", fifos = { "DIR/bt" }, env = { BEARER_TOKEN_FILE = "DIR/bt" } },
    { name = "the Rucio token and expiry files", fifos = {
        "DIR/tmp/alice/.rucio_alice/auth_token_for_account_root",
        "DIR/tmp/alice/.rucio_alice/auth_token_exp_for_account_root" },
      env = { RUCIO_ACCOUNT = "root" } },
    { name = "RUCIO_CONFIG", fifos = { "DIR/rucio.cfg" }, env = { RUCIO_CONFIG = "DIR/rucio.cfg" } },
    { name = "$RUCIO_HOME/etc/rucio.cfg", fifos = { "DIR/home/etc/rucio.cfg" }, env = { RUCIO_HOME = "DIR/home" } },
    { name = "auth_token_file_path", fifos = { "DIR/token" }, cfg = "[client]\nauth_token_file_path = DIR/token\n" },
    { name = "settings.conf", fifos = { "DIR/.config/arvados/settings.conf" }, env = {} },
  }

  for _, case in ipairs(cases) do
    it("returns at once with a FIFO at " .. case.name, function()
      local function fill(s)
        return (s:gsub("TMPFILE", tmp_file):gsub("DIR", dir):gsub("UID", tostring(uid)))
      end
      local env = { LOGNAME = "alice", TMPDIR = dir .. "/tmp", HOME = dir, RUCIO_CONFIG = dir .. "/default.cfg" }
      sh("mkdir -p " .. quote(dir .. "/tmp"))
      write(dir .. "/default.cfg", fill(case.cfg or "[client]\n"))
      for k, v in pairs(case.env or {}) do
        env[k] = fill(v)
      end
      if env.RUCIO_HOME then
        env.RUCIO_CONFIG = nil
      end
      for _, path in ipairs(case.fifos) do
        fifo(fill(path))
      end
      local fields = {}
      for k, v in pairs(env) do
        fields[#fields + 1] = ("[%q] = %q"):format(k, v)
      end
      local script = ("local tp = require 'tokenpolicy' "
        .. "local list, msg = tp.discover{ uid = %d, env = { %s } } "
        .. "print(list and ('ok ' .. #list) or ('failed ' .. tostring(msg)))"):format(uid, table.concat(fields, ", "))
      local out, ms = child(script, 10)
      assert.matches("^ok %d+\nrc=0\n$", out:gsub("^failed [^\n]*", "ok 0"))
      assert.is_true(ms < 1000, ("took %d ms"):format(ms))
    end)
  end

  it("lists a FIFO at a WLCG path as a problem, never active", function()
    fifo(tmp_file)
    local list = assert(discover({ scheme = "wlcg", uid = uid, env = {} }))
    assert.are.equal(1, #list)
    assert.are.equal(tmp_file, list[1].path)
    assert.is_true(list[1].exists)
    assert.is_false(list[1].active)
    assert.are.equal("io: " .. tmp_file .. " is a FIFO (named pipe), not a regular file", list[1].problem)
  end)
end)

describe("read_config", function()
  it("refuses a FIFO without waiting for a writer", function()
    fifo(dir .. "/rucio.cfg")
    local msg = expect.fails("io", tp.read_config(dir .. "/rucio.cfg"))
    assert.are.equal("io: read_config: " .. dir .. "/rucio.cfg is a FIFO (named pipe), not a regular file", msg)
  end)
end)
