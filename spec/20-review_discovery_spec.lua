-- What the outside review of discovery found (issue 8), one block per
-- finding. Every case runs in a sandbox directory with an explicit `env`
-- table; what could hang runs in a child process with a time limit, so a
-- regression fails instead of stopping the suite.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"
local discover = require("tokenpolicy.discovery").discover
local discovery_rucio_config = require("tokenpolicy.discovery").rucio_config

local LUA = "lua" .. _VERSION:match("%d+%.%d+")

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Under `make asan` the sanitizer runtime is preloaded into every process;
-- helper commands run without it (it aborts some of them), and only the
-- child Lua interpreters get it back.
local PRELOAD = os.getenv("LD_PRELOAD")

local function sh(cmd)
  assert(os.execute("env -u LD_PRELOAD sh -c " .. quote(cmd)), cmd)
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
  local lua = PRELOAD and ("env LD_PRELOAD=" .. quote(PRELOAD) .. " " .. LUA) or LUA
  local cmd = ("s=$(date +%%s%%N); %s timeout -s KILL %d %s -e %s 2>&1; echo \"rc=$?\"; "
    .. "echo \"ms=$(( ($(date +%%s%%N) - s) / 1000000 ))\""):format(env_prefix or "", limit, lua, quote(script))
  local p = assert(io.popen("env -u LD_PRELOAD sh -c " .. quote(cmd)))
  local out = p:read("a")
  p:close()
  local ms = tonumber(out:match("ms=(%d+)\n$"))
  -- The sanitizer's own warnings (a refused huge allocation) are not output.
  out = out:gsub("ms=%d+\n$", ""):gsub("==%d+==WARNING: [^\n]*\n", "")
  return out, ms
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
      assert.matches("^ok %d+\nrc=0\n$", out)
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

-- ---- the Rucio client decides (measured against Rucio 41.x) ----------------

-- Rucio cases share a sandbox: a writable tmp, a named user, an empty
-- rucio.cfg, unless the case says otherwise (false removes a variable).
local function rucio_env(extra)
  local e = { TMPDIR = dir .. "/tmp", LOGNAME = "alice", RUCIO_CONFIG = dir .. "/empty.cfg" }
  for k, v in pairs(extra or {}) do
    e[k] = v ~= false and (type(v) == "string" and v:gsub("DIR", dir) or v) or nil
  end
  return e
end

local function rucio(opts)
  opts.scheme = "rucio"
  return assert(discover(opts))
end

local function none_active(list)
  for _, c in ipairs(list) do
    if c.active then
      return false
    end
  end
  return true
end

describe("rucio: where the client refuses to start", function()
  before_each(function()
    write(dir .. "/empty.cfg", "[client]\n")
    sh("mkdir -p " .. quote(dir .. "/tmp"))
  end)

  local STOPS = ": the Rucio client stops (ConfigNotFound)"
  local cases = {
    { name = "RUCIO_CONFIG names a missing file", env = { RUCIO_CONFIG = "DIR/missing.cfg" },
      problem = "not_found: RUCIO_CONFIG names DIR/missing.cfg, which does not exist" .. STOPS },
    { name = "RUCIO_CONFIG is set to the empty string", env = { RUCIO_CONFIG = "" },
      problem = "not_found: RUCIO_CONFIG is set to the empty string" .. STOPS },
    { name = "RUCIO_CONFIG is a dangling link", env = { RUCIO_CONFIG = "DIR/dangling.cfg" },
      setup = "ln -s nowhere DIR/dangling.cfg",
      problem = "not_found: RUCIO_CONFIG names DIR/dangling.cfg, which does not exist" .. STOPS },
    { name = "no rucio.cfg is found", env = { RUCIO_CONFIG = false, RUCIO_HOME = "DIR/home" },
      problem = "not_found: no rucio.cfg at DIR/home/etc/rucio.cfg, /opt/rucio/etc/rucio.cfg" .. STOPS },
  }
  for _, case in ipairs(cases) do
    it("makes nothing active, with the problem on every candidate, when " .. case.name, function()
      if case.env.RUCIO_HOME and tp.stat("/opt/rucio/etc/rucio.cfg") then
        pending("/opt/rucio/etc/rucio.cfg exists on this machine")
        return
      end
      if case.setup then
        sh((case.setup:gsub("DIR", dir)))
      end
      local list = rucio({ env = rucio_env(case.env), account = "root" })
      assert.are.equal(3, #list) -- the default layout and two legacy ones
      assert.is_true(none_active(list))
      for _, c in ipairs(list) do
        assert.are.equal((case.problem:gsub("DIR", dir)), c.problem)
      end
    end)
  end
end)

describe("rucio: auth_token_file_path", function()
  it("needs no user name and no temporary directory", function()
    write(dir .. "/rucio.cfg", "[client]\nauth_token_file_path = " .. dir .. "/my_token\n")
    -- No user name anywhere: uid 4000000000 is in no password database.
    local list = rucio({ uid = 4000000000, env = { RUCIO_CONFIG = dir .. "/rucio.cfg", TMPDIR = dir .. "/none" } })
    assert.are.same({ { scheme = "rucio", vo = "def", source = "config", path = dir .. "/my_token",
      expiry_path = dir .. "/auth_token_exp_for_default_account", exists = false, active = true } }, list)
  end)
end)

describe("rucio: the temporary directory is tempfile.gettempdir()", function()
  local ME = 65534 -- nobody: a uid with a password entry and a group
  before_each(function()
    write(dir .. "/empty.cfg", "[client]\n")
    sh("chmod 0755 " .. quote(dir))
  end)

  local function tmp_of(opts)
    local path = rucio(opts)[1].path
    return (path:match("^(.*)/alice/%.rucio_alice/auth_token_for_default_account$"))
  end

  -- Each case: how DIR/t is made (nil: not at all), the uid, and which
  -- directory wins ("t": DIR/t, else a literal path).
  local cases = {
    { name = "a missing TMPDIR is skipped", make = nil, wins = "/tmp" },
    { name = "a TMPDIR that is a file is skipped", make = "touch DIR/t", wins = "/tmp" },
    { name = "a TMPDIR link to a directory is used", make = "mkdir -m 0777 DIR/real && ln -s real DIR/t",
      wins = "t" },
    { name = "a dangling TMPDIR link is skipped", make = "ln -s nowhere DIR/t", wins = "/tmp" },
    { name = "root may write any directory", make = "mkdir -m 0500 DIR/t", uid = 0, wins = "t" },
    { name = "the owner's bits decide for the owner", make = "mkdir -m 0700 DIR/t && chown 65534 DIR/t",
      uid = ME, wins = "t" },
    { name = "the owner's bits decide even when others may write", make = "mkdir -m 0577 DIR/t && chown 65534 DIR/t",
      uid = ME, wins = "/tmp" },
    { name = "the group's bits decide for a member", make = "mkdir -m 0070 DIR/t && chgrp 65534 DIR/t",
      uid = ME, wins = "t" },
    { name = "write without search permission is not enough", make = "mkdir -m 0020 DIR/t && chgrp 65534 DIR/t",
      uid = ME, wins = "/tmp" },
    { name = "others' bits decide for anyone else", make = "mkdir -m 0703 DIR/t", uid = ME, wins = "t" },
    { name = "a directory others cannot write is skipped", make = "mkdir -m 0755 DIR/t", uid = ME, wins = "/tmp" },
  }
  for _, case in ipairs(cases) do
    it(case.name, function()
      if case.make then
        sh((case.make:gsub("DIR", dir)))
      end
      local got = tmp_of({ uid = case.uid or ME, env = rucio_env({ TMPDIR = "DIR/t" }) })
      assert.are.equal(case.wins == "t" and dir .. "/t" or case.wins, got)
    end)
  end

  it("tries TEMP and TMP after TMPDIR, in that order", function()
    sh("mkdir -m 0755 " .. quote(dir .. "/a") .. " && mkdir -m 0777 " .. quote(dir .. "/b") .. " "
      .. quote(dir .. "/c"))
    local env = rucio_env({ TMPDIR = "DIR/a", TEMP = "DIR/b", TMP = "DIR/c" })
    assert.are.equal(dir .. "/b", tmp_of({ uid = ME, env = env }))
    env.TEMP = ""
    assert.are.equal(dir .. "/c", tmp_of({ uid = ME, env = env }))
  end)

  it("makes a relative TMPDIR absolute against the working directory", function()
    assert.are.equal(tp.cwd() .. "/spec", tmp_of({ uid = 0, env = rucio_env({ TMPDIR = "lua/../spec" }) }))
  end)

  it("joins like os.path.join: TMPDIR=/ gives /alice/..., not //alice/...", function()
    local list = rucio({ uid = 0, env = rucio_env({ TMPDIR = "/" }) })
    assert.are.equal("/alice/.rucio_alice/auth_token_for_default_account", list[1].path)
  end)
end)

describe("rucio: the config search", function()
  local home, venv
  before_each(function()
    home, venv = dir .. "/home", dir .. "/venv"
    write(venv .. "/etc/rucio.cfg", "[client]\naccount = fromvenv\n")
  end)

  local cases = {
    { name = "a dangling link", make = "mkdir -p DIR/home/etc && ln -s nowhere DIR/home/etc/rucio.cfg",
      wins = "venv" },
    { name = "a directory", make = "mkdir -p DIR/home/etc/rucio.cfg", wins = "venv" },
    { name = "a FIFO", make = "mkdir -p DIR/home/etc && mkfifo DIR/home/etc/rucio.cfg", wins = "venv" },
    { name = "a link to a regular file (followed)",
      make = "mkdir -p DIR/home/etc && printf '[client]\\n' > DIR/real.cfg "
        .. "&& ln -s ../../real.cfg DIR/home/etc/rucio.cfg",
      wins = "home" },
  }
  for _, case in ipairs(cases) do
    it(("%s at $RUCIO_HOME/etc/rucio.cfg is %s"):format(case.name, case.wins == "venv" and "skipped" or "used"),
      function()
        sh((case.make:gsub("DIR", dir)))
        local path, source = discovery_rucio_config({ env = { RUCIO_HOME = home, VIRTUAL_ENV = venv } })
        assert.are.same({ (case.wins == "venv" and venv or home) .. "/etc/rucio.cfg", "default" }, { path, source })
      end)
  end

  it("reads an empty RUCIO_HOME as the relative etc/rucio.cfg", function()
    local _, msg = discovery_rucio_config({ env = { RUCIO_HOME = "", VIRTUAL_ENV = dir .. "/none" } })
    if tp.stat("/opt/rucio/etc/rucio.cfg") or tp.stat("etc/rucio.cfg") then
      pending("a rucio.cfg exists at /opt/rucio/etc or ./etc here")
      return
    end
    assert.are.equal("not_found: no rucio.cfg at etc/rucio.cfg, " .. dir .. "/none/etc/rucio.cfg, "
      .. "/opt/rucio/etc/rucio.cfg: the Rucio client stops (ConfigNotFound)", msg)
  end)
end)

describe("rucio: auth_type = oidc reads a WLCG-discovered token first", function()
  local uid
  before_each(function()
    write(dir .. "/empty.cfg", "[client]\n")
    write(dir .. "/oidc.cfg", "[client]\nauth_type = oidc\naccount = root\n")
    sh("mkdir -m 0777 " .. quote(dir .. "/tmp"))
    uid = math.random(3000000000, 3999999999)
    assert.is_nil(tp.stat("/tmp/bt_u" .. uid))
  end)

  local cases = {
    { name = "RUCIO_AUTH_TYPE=oidc and BEARER_TOKEN", env = { RUCIO_AUTH_TYPE = "oidc", BEARER_TOKEN = "abc.def.ghi" },
      first = { source = "wlcg", variable = "BEARER_TOKEN", exists = true, active = true } },
    { name = "[client] auth_type = oidc and BEARER_TOKEN_FILE",
      env = { RUCIO_CONFIG = "DIR/oidc.cfg", BEARER_TOKEN_FILE = "DIR/bt" }, file = "DIR/bt",
      first = { source = "wlcg", variable = "BEARER_TOKEN_FILE", path = "DIR/bt", exists = true, active = true } },
    { name = "RUCIO_AUTH_TYPE over [client] auth_type",
      env = { RUCIO_CONFIG = "DIR/oidc.cfg", RUCIO_AUTH_TYPE = "userpass", BEARER_TOKEN = "abc" },
      first = { source = "default", active = true } },
    { name = "oidc without any WLCG token", env = { RUCIO_AUTH_TYPE = "oidc", BEARER_TOKEN = " " },
      first = { source = "default", active = true } },
  }
  for _, case in ipairs(cases) do
    it("lists what the client uses first: " .. case.name, function()
      if case.file then
        write((case.file:gsub("DIR", dir)), "token-from-file\n")
      end
      local list = rucio({ uid = uid, env = rucio_env(case.env) })
      local first = { scheme = "rucio", account = list[1].account, vo = "def" }
      for k, v in pairs(case.first) do
        first[k] = type(v) == "string" and v:gsub("DIR", dir) or v
      end
      if case.first.source == "default" then
        first.path, first.expiry_path, first.exists = list[1].path, list[1].expiry_path, false
      end
      assert.are.same(first, list[1])
      for i = 2, #list do
        assert.is_false(list[i].active)
        assert.are_not.equal("wlcg", list[i].source)
      end
      assert.is_true(#list >= 2 or case.first.source == "default")
    end)
  end
end)

describe("rucio: the password database fallback", function()
  it("uses the real uid, as getpass does", function()
    if not tp.user(65534) or tp.euid() ~= 0 then
      pending("needs root and a uid 65534 in the password database")
      return
    end
    if PRELOAD then
      -- A process whose real and effective uids differ runs in secure
      -- execution mode, where the loader ignores LD_PRELOAD paths.
      pending("the sanitizer runtime cannot be preloaded when the real uid differs from the effective one")
      return
    end
    write(dir .. "/empty.cfg", "[client]\n")
    sh("chmod 0755 " .. quote(dir))
    -- setpriv changes the real uid alone: the effective one stays root.
    local script = ("local tp = require 'tokenpolicy' "
      .. "local c = tp.discover{ scheme = 'rucio', env = { RUCIO_CONFIG = %q, TMPDIR = '/tmp' } }[1] "
      .. "print(tp.uid(), tp.euid(), c.path)"):format(dir .. "/empty.cfg")
    local out = child(script, 10, "setpriv --ruid=65534")
    local name = tp.user(65534).name
    assert.are.equal(("65534\t0\t/tmp/%s/.rucio_%s/auth_token_for_default_account\nrc=0\n"):format(name, name), out)
  end)
end)

describe("wlcg: a value that is not an RFC 6750 b64token stops the search", function()
  local uid, tmp_file
  before_each(function()
    uid = math.random(3000000000, 3999999999)
    tmp_file = "/tmp/bt_u" .. uid
    assert.is_nil(tp.stat(tmp_file))
    write(tmp_file, "good-token")
  end)
  after_each(function() os.remove(tmp_file) end)

  local MALFORMED = " is not an RFC 6750 b64token (letters, digits, - . _ ~ + / and a trailing '=' run); "
    .. "WLCG discovery stops here"
  local cases = {
    { name = "a space inside BEARER_TOKEN", env = { BEARER_TOKEN = " abc def\n" }, what = "BEARER_TOKEN" },
    { name = "'=' before the end", env = { BEARER_TOKEN = "ab=c" }, what = "BEARER_TOKEN" },
    { name = "a quote", env = { BEARER_TOKEN = 'abc"' }, what = "BEARER_TOKEN" },
    { name = "a file holding two lines", env = { BEARER_TOKEN_FILE = "DIR/bt" }, file = "one\ntwo\n",
      what = "DIR/bt" },
    { name = "a file holding a non-ASCII byte", env = { BEARER_TOKEN_FILE = "DIR/bt" }, file = "tok\xc3\xa9n",
      what = "DIR/bt" },
  }
  for _, case in ipairs(cases) do
    it(case.name .. " is listed as malformed and nothing after it is active", function()
      if case.file then
        write(dir .. "/bt", case.file)
      end
      local env = {}
      for k, v in pairs(case.env) do
        env[k] = v:gsub("DIR", dir)
      end
      local list = assert(discover({ scheme = "wlcg", uid = uid, env = env }))
      assert.are.equal("malformed: " .. case.what:gsub("DIR", dir) .. MALFORMED, list[1].problem)
      assert.is_true(none_active(list))
      assert.are.equal(tmp_file, list[#list].path) -- listed, holding a good token, not active
      assert.is_true(list[#list].exists)
    end)
  end

  it("accepts every b64token character and trailing '='", function()
    local list = assert(discover({ scheme = "wlcg", uid = uid, env = { BEARER_TOKEN = "aZ09-._~+/==" } }))
    assert.is_true(list[1].active)
    assert.is_nil(list[1].problem)
  end)
end)

describe("discover: one bad source spoils only its own scheme", function()
  local uid
  before_each(function()
    uid = math.random(3000000000, 3999999999)
    sh("mkdir -p " .. quote(dir .. "/tmp"))
    write(dir .. "/good.cfg", "[client]\naccount = root\n")
    write(dir .. "/bad.cfg", "[client]\naccount root\n")
    write(dir .. "/.config/arvados/settings.conf", "ARVADOS_API_HOST=h\nARVADOS_API_TOKEN=t\n")
  end)

  local cases = {
    { name = "a bad line in settings.conf", bad = "arvados",
      setup = function() write(dir .. "/.config/arvados/settings.conf", "ARVADOS_API_HOST=h\nnot a setting\n") end,
      problem = "malformed: DIR/.config/arvados/settings.conf: line 2: not a KEY=VALUE line: the Arvados Python SDK "
        .. "stops on it" },
    { name = "an unreadable settings.conf (a directory)", bad = "arvados",
      setup = function()
        os.remove(dir .. "/.config/arvados/settings.conf")
        sh("mkdir " .. quote(dir .. "/.config/arvados/settings.conf"))
      end,
      problem = "io: read_config: DIR/.config/arvados/settings.conf is a directory, not a regular file: the Arvados "
        .. "Python SDK stops on it" },
    { name = "a malformed rucio.cfg", bad = "rucio", config = "bad.cfg",
      problem = "malformed: DIR/bad.cfg: line 2: neither a [section] header nor a 'name = value' line: the Rucio "
        .. "client cannot load its config and stops" },
    { name = "an unreadable rucio.cfg (a FIFO)", bad = "rucio", config = "fifo.cfg",
      setup = function() fifo(dir .. "/fifo.cfg") end,
      problem = "io: read_config: DIR/fifo.cfg is a FIFO (named pipe), not a regular file: the Rucio client cannot "
        .. "load its config and stops" },
  }
  for _, case in ipairs(cases) do
    it(case.name .. " is a problem of " .. case.bad .. " alone", function()
      if case.setup then
        case.setup()
      end
      local list = assert(discover({ uid = uid, env = { HOME = dir, LOGNAME = "alice", TMPDIR = dir .. "/tmp",
        RUCIO_CONFIG = dir .. "/" .. (case.config or "good.cfg"), BEARER_TOKEN = "wlcg-token" } }))
      local active = {}
      for _, c in ipairs(list) do
        if c.scheme == case.bad then
          assert.are.equal((case.problem:gsub("DIR", dir)), c.problem)
          assert.is_false(c.active)
        else
          assert.is_nil(c.problem)
        end
        if c.active then
          active[#active + 1] = c.scheme
        end
      end
      local want = {}
      for _, scheme in ipairs({ "rucio", "wlcg", "arvados" }) do
        if scheme ~= case.bad then
          want[#want + 1] = scheme
        end
      end
      assert.are.same(want, active)
    end)
  end
end)

-- ---- files: what is at a path, in words ------------------------------------

describe("messages about what is at a path", function()
  -- Each kind: how to make it at P, its stat().type (unchanged), and the
  -- words messages use. Device nodes are made in the sandbox (root only).
  local kinds = {
    { name = "character device", make = "mknod P c 1 5", type = "other", words = "a character device", root = true },
    { name = "block device", make = "mknod P b 7 250", type = "other", words = "a block device", root = true },
    { name = "FIFO", make = "mkfifo P", type = "fifo", words = "a FIFO (named pipe)" },
    { name = "socket", make = "python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' P",
      type = "socket", words = "a socket" },
    { name = "directory", make = "mkdir P", type = "directory", words = "a directory" },
  }
  for _, kind in ipairs(kinds) do
    it("names a " .. kind.name .. " in every message, and stat().type stays " .. kind.type, function()
      if kind.root and tp.euid() ~= 0 then
        pending("mknod needs root")
        return
      end
      local p = dir .. "/entry"
      sh((kind.make:gsub("P", quote(p))))
      assert.are.equal(kind.type, tp.stat(p).type)
      local tail = " is " .. kind.words .. ", not a regular file"
      assert.are.equal("io: read_token: " .. p .. tail, expect.fails("io", tp.read_token(p)))
      assert.are.equal("io: read_config: " .. p .. tail, expect.fails("io", tp.read_config(p)))
      assert.are.equal("io: fix_permissions: " .. p .. tail, expect.fails("io", tp.fix_permissions(p)))
      if kind.type ~= "directory" then
        local found
        for _, f in ipairs(assert(tp.audit(p))) do
          if f.path == p and f.code == "io" then found = f.problem end
        end
        assert.are.equal(p .. tail .. ": remove it and write the token again", found)
        assert.are.equal("io: remove_tree: " .. p .. " is " .. kind.words .. ", not a directory",
          expect.fails("io", tp.remove_tree(p)))
      end
    end)
  end

  it("reads /dev/zero as a character device (the report's case)", function()
    assert.are.equal("io: read_token: /dev/zero is a character device, not a regular file",
      expect.fails("io", tp.read_token("/dev/zero")))
  end)
end)

describe("read_config", function()
  it("returns the whole text, unstripped, and the status of what it read", function()
    write(dir .. "/rucio.cfg", "\n[client]\naccount = a\n\n")
    local text, st = tp.read_config(dir .. "/rucio.cfg")
    assert.are.equal("\n[client]\naccount = a\n\n", text)
    assert.are.equal("file", st.type)
    assert.are.equal(#text, st.size)
  end)

  it("follows a symbolic link, as Python's open does", function()
    write(dir .. "/real.cfg", "[client]\n")
    sh("ln -s real.cfg " .. quote(dir .. "/link.cfg"))
    assert.are.equal("[client]\n", tp.read_config(dir .. "/link.cfg"))
    sh("ln -s nowhere " .. quote(dir .. "/dangling.cfg"))
    expect.fails("not_found", tp.read_config(dir .. "/dangling.cfg"))
    sh("ln -s loop " .. quote(dir .. "/loop"))
    assert.are.equal("io: read_config: " .. dir .. "/loop: too many levels of symbolic links",
      expect.fails("io", tp.read_config(dir .. "/loop")))
  end)

  it("caps the size: 1 MiB by default, or max_size", function()
    write(dir .. "/big.cfg", ("x"):rep(1024 * 1024 + 1))
    assert.are.equal("too_large: read_config: " .. dir .. "/big.cfg is 1048577 bytes, over the limit of 1048576",
      expect.fails("too_large", tp.read_config(dir .. "/big.cfg")))
    assert.are.equal(1024 * 1024 + 1, #assert(tp.read_config(dir .. "/big.cfg", { max_size = 2 * 1024 * 1024 })))
    expect.fails("too_large", tp.read_config(dir .. "/big.cfg", { max_size = 10 }))
  end)

  it("fails with not_found for a missing file", function()
    assert.are.equal("not_found: read_config: " .. dir .. "/none does not exist",
      expect.fails("not_found", tp.read_config(dir .. "/none")))
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() tp.read_config(1) end, "bad argument #1 to 'read_config' (string expected, got number)")
    assert.has_error(function() tp.read_config("") end, "bad argument #1 to 'read_config' (path is empty)")
    assert.has_error(function() tp.read_config("x", { uid = 1 }) end,
      "bad argument #2 to 'read_config' (unknown option 'uid')")
    assert.has_error(function() tp.read_config("x", { max_size = 0 }) end,
      "bad argument #2 to 'read_config' (max_size must be an integer of at least 1)")
  end)
end)

describe("the Lua modules reach files only through the core", function()
  for _, module in ipairs({ "discovery", "ini", "classify" }) do
    it(module .. ".lua has no io.open or io.lines, and no own fail or option checker", function()
      local f = assert(io.open("lua/tokenpolicy/" .. module .. ".lua"))
      local source = f:read("a")
      f:close()
      assert.is_nil(source:find("io%.open"))
      assert.is_nil(source:find("io%.lines"))
      assert.is_nil(source:find("local function fail"))
      assert.is_nil(source:find("local function check_opts"))
    end)
  end

  it("files.c reads options only through the shared readers", function()
    local f = assert(io.open("csrc/files.c"))
    local source = f:read("a")
    f:close()
    assert.is_nil(source:find("lua_next"))
    assert.is_nil(source:find("[^_]opt_boolean"))
    assert.is_nil(source:find("luaL_newmetatable"))
  end)

  it("ini.read fails at once on a FIFO", function()
    fifo(dir .. "/rucio.cfg")
    expect.fails("io", require("tokenpolicy.ini").read(dir .. "/rucio.cfg"))
  end)
end)

-- ---- deterministic release --------------------------------------------------

describe("an error raised mid-call", function()
  -- A sparse file of 4 EiB: read_token accepts its size (max_size is
  -- larger) and then cannot allocate the buffer, so it raises "not enough
  -- memory" while its descriptor is open. The child process lets the
  -- sanitizer allocator return NULL instead of aborting.
  local huge = "/dev/shm/tokenpolicy-spec-" .. tostring(os.time()) .. "-" .. math.random(1e9)
  before_each(function()
    local st = tp.stat("/dev/shm")
    if not st or st.type ~= "directory" then
      return
    end
    os.execute("truncate -s 4611686018427387903 " .. quote(huge) .. " 2>/dev/null")
  end)
  after_each(function() os.remove(huge) end)

  for _, fn in ipairs({ "read_token", "read_config" }) do
    it(("leaves no descriptor open after %s raises (%s)"):format(fn, _VERSION), function()
      if not tp.stat(huge) then
        pending("no tmpfs at /dev/shm for a sparse 4 EiB file")
        return
      end
      local script = ([[
        local tp = require "tokenpolicy"
        local path = %q
        local f = assert(io.open("/proc/self/stat"))
        local pid = f:read("a"):match("^%%d+")
        f:close()
        local function open_on_path()
          local p = assert(io.popen("ls -l /proc/" .. pid .. "/fd"))
          local n = 0
          for line in p:lines() do
            if line:sub(-#path) == path then n = n + 1 end
          end
          p:close()
          return n
        end
        collectgarbage("stop")
        local ok, err = pcall(tp.%s, path, { max_size = 1 << 62, allow_insecure = %s })
        local now = open_on_path()
        collectgarbage("restart")
        collectgarbage()
        print(ok, err, now, open_on_path())
      ]]):format(huge, fn, fn == "read_token" and "true" or "nil")
      local out = child(script, 20, 'ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1"')
      -- Lua 5.4 closes the to-be-closed work as the error unwinds; on 5.3
      -- only the collector releases it.
      local at_error = _VERSION == "Lua 5.3" and 1 or 0
      assert.are.equal(("false\t%s: not enough memory\t%d\t0\nrc=0\n"):format(fn, at_error), out)
    end)
  end
end)

-- ---- values print readably --------------------------------------------------

describe("printing", function()
  local SECRET = "abcdefghijklmnopqrstuvwxyz0123456789SECRET"

  it("prints discover's list as a header and one aligned line per candidate, and each candidate alone", function()
    local uid = math.random(3000000000, 3999999999)
    local list = assert(discover({ scheme = "wlcg", uid = uid, env = { BEARER_TOKEN = SECRET,
      BEARER_TOKEN_FILE = dir .. "/missing" } }))
    local tmp = "/tmp/bt_u" .. uid
    local w = math.max(#tmp, #dir + 8)
    local function line(cells)
      return (("%-6s  %-7s  %-7s  %-" .. w .. "s  %-7s  %-6s  %s"):format(table.unpack(cells)):gsub("%s+$", ""))
    end
    assert.are.equal(table.concat({
      line({ "scheme", "account", "source", "path", "exists", "active", "problem" }),
      line({ "wlcg", "-", "env", "$BEARER_TOKEN", "exists", "active", "" }),
      line({ "wlcg", "-", "env", dir .. "/missing", "missing", "-", "" }),
      line({ "wlcg", "-", "default", tmp, "missing", "-", "" }),
    }, "\n"), tostring(list))
    assert.are.equal("wlcg  -  env  $BEARER_TOKEN  exists  active", tostring(list[1]))
    assert.is_nil(tostring(list):find(SECRET, 1, true))
  end)

  it("prints an empty list and a candidate's problem", function()
    local list = assert(discover({ scheme = "rucio", env = { RUCIO_CONFIG = "", LOGNAME = "a", TMPDIR = dir } }))
    assert.are.equal("rucio  -  default  " .. dir .. "/a/.rucio_a/auth_token_for_default_account  missing  -  "
      .. "not_found: RUCIO_CONFIG is set to the empty string: the Rucio client stops (ConfigNotFound)",
      tostring(list[1]))
    assert.are.equal("no candidates", tostring(setmetatable({}, getmetatable(list))))
  end)

  it("prints classify's result on one line, without the secret", function()
    local cases = {
      { "root-jdoe-app-0123456789abcdef0123456789abcdef",
        'tokenpolicy.Classification: rucio (account "root", identity "jdoe", app_id "app")' },
      { "v2/zzzzz-gj3su-012345678901234/" .. SECRET,
        'tokenpolicy.Classification: arvados_v2 (uuid "zzzzz-gj3su-012345678901234")' },
      { SECRET, "tokenpolicy.Classification: arvados_v1" },
      { "x", "tokenpolicy.Classification: opaque" },
      { tp.b64url_encode('{"alg":"RS256","kid":"k1"}') .. "." .. tp.b64url_encode('{"iss":"a\\nb","exp":0}')
        .. "." .. tp.b64url_encode(SECRET),
        'tokenpolicy.Classification: jwt (alg "RS256", kid "k1", iss "a\\nb", exp 1970-01-01 00:00:00 UTC, decoded)' },
    }
    for _, case in ipairs(cases) do
      assert.are.equal(case[2], tostring(tp.classify(case[1])))
    end
  end)

  it("prints audit's findings, one per line, and read_token's info", function()
    write(dir .. "/token", SECRET)
    sh("chmod 0644 " .. quote(dir .. "/token") .. " && chmod 0777 " .. quote(dir))
    local findings = assert(tp.audit(dir .. "/token"))
    assert.are.equal(table.concat({
      "insecure_permissions: group or others can access the token file " .. dir .. "/token (mode 0644): run chmod "
        .. "600 " .. dir .. "/token",
      "insecure_permissions: group or others can write the directory " .. dir .. " (mode 0777), so they can replace "
        .. "the token: run chmod go-w " .. dir,
    }, "\n"), tostring(findings))
    assert.are.equal(tostring(findings):match("^[^\n]*"), tostring(findings[1]))
    sh("chmod 0700 " .. quote(dir))
    sh("chmod 0600 " .. quote(dir .. "/token"))
    assert.are.equal("no findings", tostring(assert(tp.audit(dir .. "/token"))))
    local token, info = assert(tp.read_token(dir .. "/token"))
    assert.are.equal(SECRET, token)
    assert.matches("^tokenpolicy%.TokenFileInfo: mode 0600, uid %d+, 42 bytes, modified %d%d%d%d%-%d%d%-%d%d "
      .. "%d%d:%d%d:%d%d UTC$", tostring(info))
    sh("chmod 0640 " .. quote(dir .. "/token"))
    info = select(2, assert(tp.read_token(dir .. "/token", { allow_insecure = true })))
    assert.matches("\nwarning: the token file .* is readable by others %(mode 0640%)", tostring(info))
    assert.is_nil(tostring(info):find(SECRET, 1, true))
  end)
end)

describe("wlcg: a symbolic link at a token path", function()
  local uid
  before_each(function() uid = math.random(3000000000, 3999999999) end)

  local cases = {
    { name = "to a file holding a token is used", target = "file", content = "tok", active = true },
    { name = "to an empty file is not used", target = "file", content = "", active = false },
    { name = "to a FIFO is a problem, never opened", target = "fifo", active = false,
      problem = "io: DIR/link is a symbolic link to a FIFO (named pipe), not to a regular file" },
    { name = "to a directory is a problem", target = "dir", active = false,
      problem = "io: DIR/link is a symbolic link to a directory, not to a regular file" },
    { name = "that dangles is not used", target = "none", active = false },
  }
  for _, case in ipairs(cases) do
    it(case.name, function()
      if case.target == "file" then
        write(dir .. "/target", case.content)
      elseif case.target == "fifo" then
        fifo(dir .. "/target")
      elseif case.target == "dir" then
        sh("mkdir " .. quote(dir .. "/target"))
      end
      sh("ln -s target " .. quote(dir .. "/link"))
      local list = assert(discover({ scheme = "wlcg", uid = uid, env = { BEARER_TOKEN_FILE = dir .. "/link" } }))
      assert.are.equal(dir .. "/link", list[1].path)
      assert.is_true(list[1].exists)
      assert.are.equal(case.active, list[1].active)
      assert.are.equal(case.problem and case.problem:gsub("DIR", dir), list[1].problem)
    end)
  end
end)
