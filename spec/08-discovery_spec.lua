-- Discovery: where Rucio, WLCG tools and Arvados keep their tokens, and
-- which one each would use. Every case runs in a sandbox directory with an
-- explicit `env` table, so nothing here depends on the real environment.
local tp = require "tokenpolicy"
local discovery = require "tokenpolicy.discovery"
local discover, rucio_config = discovery.discover, discovery.rucio_config

local HEX = "0123456789abcdef0123456789abcdef"

local function shell(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function write(path, text)
  assert(os.execute("mkdir -p " .. quote(path:match("^(.*)/"))))
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function scheme_of(list, scheme)
  local out = {}
  for _, c in ipairs(list) do
    if c.scheme == scheme then
      out[#out + 1] = c
    end
  end
  return out
end

local function run(opts, scheme)
  opts.scheme = scheme
  local list, msg = discover(opts)
  assert(list, msg)
  return list
end

local function active_of(list)
  local found
  for _, c in ipairs(list) do
    if c.active then
      assert.is_nil(found, "more than one active candidate")
      found = c
    end
  end
  return found
end

-- Whether any field of any candidate contains `s`.
local function mentions(list, s)
  for _, c in ipairs(list) do
    for _, v in pairs(c) do
      if type(v) == "string" and v:find(s, 1, true) then
        return true
      end
    end
  end
  return false
end

local dir
before_each(function()
  -- mktemp leaks at exit: without the sanitizer preload of `make asan`
  -- it does not abort there.
  dir = shell("env -u LD_PRELOAD mktemp -d"):gsub("%s+$", "")
end)
after_each(function()
  os.execute("rm -rf " .. quote(dir))
  collectgarbage()
end)

describe("rucio", function()
  -- The environment most cases start from: tmp in the sandbox, a named
  -- user, and a rucio.cfg with no values.
  before_each(function()
    write(dir .. "/empty.cfg", "[client]\n")
    assert(os.execute("mkdir -p " .. quote(dir .. "/tmp")))
  end)
  local function env(extra)
    local e = { TMPDIR = dir .. "/tmp", LOGNAME = "alice", RUCIO_CONFIG = dir .. "/empty.cfg" }
    for k, v in pairs(extra or {}) do
      e[k] = v ~= false and v or nil
    end
    return e
  end

  it("uses <tmp>/<osuser>/.rucio_<osuser>/auth_token_for_account_<account>, expiry beside it", function()
    local list = run({ env = env({ RUCIO_ACCOUNT = "root" }) }, "rucio")
    local base = dir .. "/tmp/alice/.rucio_alice/"
    assert.are.same({
      scheme = "rucio", account = "root", vo = "def", source = "default", exists = false, active = true,
      path = base .. "auth_token_for_account_root", expiry_path = base .. "auth_token_exp_for_account_root",
    }, list[1])
  end)

  it("reports whether the token file exists", function()
    write(dir .. "/tmp/alice/.rucio_alice/auth_token_for_account_root", "root-alice-unknown-" .. HEX)
    local list = run({ env = env({ RUCIO_ACCOUNT = "root" }) }, "rucio")
    assert.is_true(list[1].exists)
    assert.is_false(mentions(list, HEX))
  end)

  it("names the file for_default_account without an account, and lists no legacy paths", function()
    local list = run({ env = env() }, "rucio")
    local base = dir .. "/tmp/alice/.rucio_alice/"
    assert.are.equal(1, #list)
    assert.is_nil(list[1].account)
    assert.are.equal(base .. "auth_token_for_default_account", list[1].path)
    assert.are.equal(base .. "auth_token_exp_for_default_account", list[1].expiry_path)
  end)

  describe("account", function()
    local cfg
    before_each(function()
      cfg = dir .. "/rucio.cfg"
      write(cfg, "[client]\naccount = fromcfg\n")
    end)

    it("is opts.account first", function()
      local list = run({ account = "opt", env = env({ RUCIO_CONFIG = cfg, RUCIO_ACCOUNT = "var" }) }, "rucio")
      assert.are.equal("opt", list[1].account)
    end)

    it("then RUCIO_ACCOUNT", function()
      local list = run({ env = env({ RUCIO_CONFIG = cfg, RUCIO_ACCOUNT = "var" }) }, "rucio")
      assert.are.equal("var", list[1].account)
      assert.matches("/auth_token_for_account_var$", list[1].path)
    end)

    it("then [client] account", function()
      local list = run({ env = env({ RUCIO_CONFIG = cfg }) }, "rucio")
      assert.are.equal("fromcfg", list[1].account)
      assert.matches("/auth_token_for_account_fromcfg$", list[1].path)
    end)
  end)

  describe("vo", function()
    local cfg
    before_each(function()
      cfg = dir .. "/rucio.cfg"
      write(cfg, "[client]\naccount = root\nvo = cfgvo\n")
    end)

    it("adds @<vo> to the directory when it is not def", function()
      local list = run({ env = env({ RUCIO_ACCOUNT = "root", RUCIO_VO = "atlas" }) }, "rucio")
      assert.are.equal("atlas", list[1].vo)
      assert.are.equal(dir .. "/tmp/alice/.rucio_alice@atlas/auth_token_for_account_root", list[1].path)
      assert.are.equal(dir .. "/tmp/alice/.rucio_alice@atlas/auth_token_exp_for_account_root", list[1].expiry_path)
    end)

    it("adds nothing for def, from any source", function()
      local list = run({ env = env({ RUCIO_ACCOUNT = "root", RUCIO_VO = "def" }) }, "rucio")
      assert.are.equal(dir .. "/tmp/alice/.rucio_alice/auth_token_for_account_root", list[1].path)
      write(cfg, "[client]\nvo = def\n")
      list = run({ env = env({ RUCIO_CONFIG = cfg }) }, "rucio")
      assert.are.equal("def", list[1].vo)
      assert.are.equal(dir .. "/tmp/alice/.rucio_alice/auth_token_for_default_account", list[1].path)
    end)

    it("is opts.vo, then RUCIO_VO, then [client] vo, then def", function()
      assert.are.equal("o", run({ vo = "o", env = env({ RUCIO_CONFIG = cfg, RUCIO_VO = "v" }) }, "rucio")[1].vo)
      assert.are.equal("v", run({ env = env({ RUCIO_CONFIG = cfg, RUCIO_VO = "v" }) }, "rucio")[1].vo)
      local list = run({ env = env({ RUCIO_CONFIG = cfg }) }, "rucio")
      assert.are.equal("cfgvo", list[1].vo)
      assert.matches("/%.rucio_alice@cfgvo/", list[1].path)
      assert.are.equal("def", run({ env = env() }, "rucio")[1].vo)
    end)
  end)

  describe("tmp", function()
    local function tmp_of(e)
      local path = run({ env = e }, "rucio")[1].path
      return (path:match("^(.*)/alice/%.rucio_alice/auth_token_for_default_account$"))
    end

    it("is TMPDIR, then TEMP, then TMP, then /tmp", function()
      assert(os.execute("mkdir " .. quote(dir .. "/t1") .. " " .. quote(dir .. "/t2") .. " " .. quote(dir .. "/t3")))
      local e = env({ TMPDIR = dir .. "/t1", TEMP = dir .. "/t2", TMP = dir .. "/t3" })
      assert.are.equal(dir .. "/t1", tmp_of(e))
      e.TMPDIR = nil
      assert.are.equal(dir .. "/t2", tmp_of(e))
      e.TEMP = nil
      assert.are.equal(dir .. "/t3", tmp_of(e))
      e.TMP = nil
      assert.are.equal("/tmp", tmp_of(e))
    end)

    it("skips empty values, as Python's tempfile does", function()
      assert(os.execute("mkdir " .. quote(dir .. "/t2")))
      assert.are.equal(dir .. "/t2", tmp_of(env({ TMPDIR = "", TEMP = dir .. "/t2" })))
    end)

    it("is normalised like os.path.abspath, and joined like os.path.join", function()
      assert(os.execute("mkdir " .. quote(dir .. "/T")))
      assert.are.equal(dir .. "/T", tmp_of(env({ TMPDIR = dir .. "//x/../T/" })))
      assert.are.equal("", tmp_of(env({ TMPDIR = "/" })))      -- /alice/..., not //alice/...
      assert.are.equal("/", tmp_of(env({ TMPDIR = "//" })))    -- POSIX keeps a leading "//": //alice
    end)
  end)

  describe("osuser", function()
    local names = { "LOGNAME", "USER", "LNAME", "USERNAME" }
    local function user_of(opts)
      local path = run(opts, "rucio")[1].path
      return (path:match("^" .. dir:gsub("%p", "%%%0") .. "/tmp/([^/]+)/%.rucio_"))
    end

    it("is opts.user, then LOGNAME, USER, LNAME, USERNAME", function()
      local e = { TMPDIR = dir .. "/tmp", RUCIO_CONFIG = dir .. "/empty.cfg" }
      for _, name in ipairs(names) do
        e[name] = name:lower()
      end
      assert.are.equal("given", user_of({ user = "given", env = e }))
      for _, name in ipairs(names) do
        assert.are.equal(name:lower(), user_of({ env = e }))
        e[name] = ""
      end
    end)

    it("then the password database", function()
      local e = { TMPDIR = dir .. "/tmp", RUCIO_CONFIG = dir .. "/empty.cfg" }
      assert.are.equal(tp.user(tp.uid()).name, user_of({ env = e }))
      assert.are.equal("root", user_of({ env = e, uid = 0 }))
    end)

    it("stops the client when there is no name at all: a pathless candidate with the problem", function()
      local list = run({ uid = 4000000000, env = { RUCIO_CONFIG = dir .. "/empty.cfg" } }, "rucio")
      assert.are.same({ { scheme = "rucio", vo = "def", source = "default", exists = false, active = false,
        problem = "not_found: no user name: LOGNAME, USER, LNAME and USERNAME are unset and uid 4000000000 "
          .. "is not in the password database: the Rucio client stops (getpass finds no user name)" } }, list)
    end)
  end)

  describe("auth_token_file_path", function()
    it("names the exact file (source config), with the expiry file beside it", function()
      local cfg = dir .. "/rucio.cfg"
      write(cfg, "[DEFAULT]\nhome = " .. dir .. "\n[client]\naccount = root\n"
        .. "auth_token_file_path = %(home)s/tokens/my_token\n")
      local list = run({ env = env({ RUCIO_CONFIG = cfg }) }, "rucio")
      assert.are.same({
        scheme = "rucio", account = "root", vo = "def", source = "config", exists = false, active = true,
        path = dir .. "/tokens/my_token", expiry_path = dir .. "/tokens/auth_token_exp_for_account_root",
      }, list[1])
      for i = 2, #list do
        assert.are.equal("legacy", list[i].source)
      end
    end)

    it("puts the expiry file at the root for a bare file name, as Rucio does", function()
      local cfg = dir .. "/rucio.cfg"
      write(cfg, "[client]\nauth_token_file_path = token\n")
      local list = run({ env = env({ RUCIO_CONFIG = cfg }) }, "rucio")
      assert.are.equal("token", list[1].path)
      assert.are.equal("/auth_token_exp_for_default_account", list[1].expiry_path)
    end)

    it("is ignored when empty", function()
      local cfg = dir .. "/rucio.cfg"
      write(cfg, "[client]\nauth_token_file_path =\n")
      assert.are.equal("default", run({ env = env({ RUCIO_CONFIG = cfg }) }, "rucio")[1].source)
    end)
  end)

  describe("legacy paths", function()
    it("follow the active one and are never active", function()
      local list = run({ env = env({ RUCIO_ACCOUNT = "root" }) }, "rucio")
      assert.are.equal(3, #list)
      assert.are.same({
        scheme = "rucio", account = "root", vo = "def", source = "legacy", exists = false, active = false,
        path = dir .. "/tmp/alice/.rucio_root/auth_token_root",
        expiry_path = dir .. "/tmp/alice/.rucio_root/auth_token_exp_root",
      }, list[2])
      assert.are.same({
        scheme = "rucio", account = "root", vo = "def", source = "legacy", exists = false, active = false,
        path = "/tmp/alice/.rucio_root/auth_token_for_account_root",
        expiry_path = "/tmp/alice/.rucio_root/auth_token_exp_for_account_root",
      }, list[3])
    end)

    it("keep the @<vo> of the 1.26 client's directory", function()
      local list = run({ env = env({ RUCIO_ACCOUNT = "root", RUCIO_VO = "atlas" }) }, "rucio")
      assert.are.equal(dir .. "/tmp/alice/.rucio_root@atlas/auth_token_root", list[2].path)
    end)

    it("are left out when equal to the active path", function()
      -- No TMPDIR: <tmp> is /tmp, and with user = account the shared docs
      -- layout is exactly the current one.
      local list = run({ env = { LOGNAME = "root", RUCIO_ACCOUNT = "root", RUCIO_CONFIG = dir .. "/empty.cfg" } },
        "rucio")
      assert.are.equal(2, #list)
      assert.are.equal("/tmp/root/.rucio_root/auth_token_for_account_root", list[1].path)
      assert.is_true(list[1].active)
      assert.are.equal("/tmp/root/.rucio_root/auth_token_root", list[2].path)
    end)
  end)

  describe("config file", function()
    local home, venv, conda
    before_each(function()
      home, venv, conda = dir .. "/home", dir .. "/venv", dir .. "/conda"
    end)

    it("is read again as soon as it changes, even within the same second and at the same size", function()
      local cfg = dir .. "/cached.cfg"
      local e = { RUCIO_CONFIG = cfg, LOGNAME = "alice", TMPDIR = dir }
      write(cfg, "[client]\naccount = alice\n")
      assert.are.equal("alice", run({ env = e }, "rucio")[1].account)
      assert.are.equal("alice", run({ env = e }, "rucio")[1].account)   -- from the cache
      write(cfg, "[client]\naccount = bobby\n")                       -- same size, same second
      assert.are.equal("bobby", run({ env = e }, "rucio")[1].account)
    end)

    it("is RUCIO_CONFIG alone: when it does not exist, the client stops", function()
      write(home .. "/etc/rucio.cfg", "[client]\naccount = fromhome\n")
      local e = { RUCIO_CONFIG = dir .. "/missing.cfg", RUCIO_HOME = home, LOGNAME = "alice" }
      assert.are.same({ nil, "not_found: RUCIO_CONFIG names " .. dir .. "/missing.cfg, which does not exist: "
        .. "the Rucio client stops (ConfigNotFound)", "not_found" }, { rucio_config({ env = e }) })
      assert.is_nil(run({ env = e }, "rucio")[1].account)
      write(dir .. "/there.cfg", "[client]\n")
      e.RUCIO_CONFIG = dir .. "/there.cfg"
      assert.are.same({ dir .. "/there.cfg", "env" }, { rucio_config({ env = e }) })
    end)

    it("is opts.config over RUCIO_CONFIG", function()
      write(dir .. "/given.cfg", "[client]\naccount = given\n")
      local e = { RUCIO_CONFIG = dir .. "/missing.cfg", LOGNAME = "alice" }
      assert.are.same({ dir .. "/given.cfg", "option" }, { rucio_config({ config = dir .. "/given.cfg", env = e }) })
      assert.are.equal("given", run({ config = dir .. "/given.cfg", env = e }, "rucio")[1].account)
    end)

    it("is $RUCIO_HOME/etc/rucio.cfg first", function()
      for _, d in ipairs({ home, venv, conda }) do
        write(d .. "/etc/rucio.cfg", "[client]\n")
      end
      local e = { RUCIO_HOME = home, VIRTUAL_ENV = venv, CONDA_PREFIX = conda }
      assert.are.same({ home .. "/etc/rucio.cfg", "default" }, { rucio_config({ env = e }) })
    end)

    it("is $VIRTUAL_ENV/etc/rucio.cfg second", function()
      for _, d in ipairs({ venv, conda }) do
        write(d .. "/etc/rucio.cfg", "[client]\n")
      end
      local e = { RUCIO_HOME = home, VIRTUAL_ENV = venv, CONDA_PREFIX = conda }
      assert.are.same({ venv .. "/etc/rucio.cfg", "default" }, { rucio_config({ env = e }) })
    end)

    it("is $CONDA_PREFIX/etc/rucio.cfg third", function()
      write(conda .. "/etc/rucio.cfg", "[client]\naccount = conda\n")
      local e = { RUCIO_HOME = home, VIRTUAL_ENV = venv, CONDA_PREFIX = conda, LOGNAME = "alice" }
      assert.are.same({ conda .. "/etc/rucio.cfg", "default" }, { rucio_config({ env = e }) })
      assert.are.equal("conda", run({ env = e }, "rucio")[1].account)
    end)

    it("is /opt/rucio/etc/rucio.cfg last", function()
      local e = { RUCIO_HOME = home, VIRTUAL_ENV = venv, CONDA_PREFIX = conda }
      local path, msg, code = rucio_config({ env = e })
      if tp.stat("/opt/rucio/etc/rucio.cfg") then
        assert.are.same({ "/opt/rucio/etc/rucio.cfg", "default" }, { path, msg })
      else
        assert.is_nil(path)
        assert.are.equal("not_found", code)
        assert.are.equal("not_found: no rucio.cfg at " .. home .. "/etc/rucio.cfg, " .. venv .. "/etc/rucio.cfg, "
          .. conda .. "/etc/rucio.cfg, /opt/rucio/etc/rucio.cfg: the Rucio client stops (ConfigNotFound)", msg)
      end
    end)

    it("that is malformed stops the client: every candidate has the problem, none is active", function()
      write(dir .. "/bad.cfg", "[client]\naccount = a\naccount = b\n")
      local list = run({ env = { RUCIO_CONFIG = dir .. "/bad.cfg", LOGNAME = "a" } }, "rucio")
      assert.is_nil(active_of(list))
      assert.are.equal("malformed: " .. dir .. "/bad.cfg: line 3: option 'account' in section 'client' already exists"
        .. ": the Rucio client cannot load its config and stops", list[1].problem)
      write(dir .. "/bad.cfg", "[client]\naccount = %(nobody)s\n")
      list = run({ env = { RUCIO_CONFIG = dir .. "/bad.cfg", LOGNAME = "a" } }, "rucio")
      assert.is_nil(active_of(list))
      assert.matches("^malformed: .*refers to the missing option 'nobody': the Rucio client stops on it$",
        list[1].problem)
    end)

    it("that cannot be read stops the client (io)", function()
      local list = run({ env = { RUCIO_CONFIG = dir, LOGNAME = "a" } }, "rucio")
      assert.is_nil(active_of(list))
      assert.are.equal("io: read_config: " .. dir .. " is a directory, not a regular file: the Rucio client cannot "
        .. "load its config and stops", list[1].problem)
    end)
  end)
end)

describe("wlcg", function()
  local uid, tmp_file
  before_each(function()
    -- /tmp/bt_u<uid> is a real path: use a uid nobody has, and check.
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    uid = math.random(3000000000, 3999999999)
    tmp_file = "/tmp/bt_u" .. uid
    assert.is_nil(tp.stat(tmp_file), tmp_file .. " already exists")
  end)
  after_each(function()
    os.remove(tmp_file)
  end)

  local function paths(list)
    local out = {}
    for _, c in ipairs(list) do
      out[#out + 1] = (c.variable or c.path) .. (c.active and " *" or "")
    end
    return out
  end

  it("takes BEARER_TOKEN first, and never returns its value", function()
    local token = "eyJhbGciOiJIUzI1NiJ9.secret-part." .. HEX
    local list = run({ uid = uid, env = { BEARER_TOKEN = " " .. token .. "\n", BEARER_TOKEN_FILE = dir .. "/f",
      XDG_RUNTIME_DIR = dir } }, "wlcg")
    assert.are.same({ scheme = "wlcg", source = "env", variable = "BEARER_TOKEN", exists = true, active = true },
      list[1])
    assert.are.same({ "BEARER_TOKEN *", "BEARER_TOKEN_FILE", dir .. "/bt_u" .. uid, tmp_file }, paths(list))
    assert.is_false(mentions(list, "secret-part"))
  end)

  it("moves on from a BEARER_TOKEN of only C whitespace", function()
    write(dir .. "/f", "token-in-file")
    local list = run({ uid = uid, env = { BEARER_TOKEN = " \t\n\v\f\r", BEARER_TOKEN_FILE = dir .. "/f" } }, "wlcg")
    assert.are.same({ scheme = "wlcg", source = "env", variable = "BEARER_TOKEN", exists = false, empty = true,
      active = false }, list[1])
    assert.are.same({ scheme = "wlcg", source = "env", variable = "BEARER_TOKEN_FILE", path = dir .. "/f",
      exists = true, active = true }, list[2])
    assert.is_false(mentions(list, "token-in-file"))
  end)

  it("moves on from an empty or blank BEARER_TOKEN_FILE", function()
    write(dir .. "/blank", " \n\n")
    write(dir .. "/bt_u" .. uid, "xdg-token")
    local list = run({ uid = uid, env = { BEARER_TOKEN_FILE = dir .. "/blank", XDG_RUNTIME_DIR = dir } }, "wlcg")
    assert.are.same({ scheme = "wlcg", source = "env", variable = "BEARER_TOKEN_FILE", path = dir .. "/blank",
      exists = true, empty = true, active = false }, list[1])
    assert.are.same({ "BEARER_TOKEN_FILE", dir .. "/bt_u" .. uid .. " *", tmp_file }, paths(list))
    list = run({ uid = uid, env = { BEARER_TOKEN_FILE = "", XDG_RUNTIME_DIR = dir } }, "wlcg")
    assert.are.same({ scheme = "wlcg", source = "env", variable = "BEARER_TOKEN_FILE", exists = false,
      empty = true, active = false }, list[1])
    assert.is_true(list[2].active)
  end)

  it("moves on from a missing BEARER_TOKEN_FILE", function()
    write(dir .. "/bt_u" .. uid, "xdg-token")
    local list = run({ uid = uid, env = { BEARER_TOKEN_FILE = dir .. "/missing", XDG_RUNTIME_DIR = dir } }, "wlcg")
    assert.is_false(list[1].exists)
    assert.are.same({ "BEARER_TOKEN_FILE", dir .. "/bt_u" .. uid .. " *", tmp_file }, paths(list))
  end)

  it("prefers $XDG_RUNTIME_DIR/bt_u<uid> to /tmp/bt_u<uid>", function()
    write(dir .. "/bt_u" .. uid, "xdg-token")
    write(tmp_file, "tmp-token")
    local list = run({ uid = uid, env = { XDG_RUNTIME_DIR = dir } }, "wlcg")
    assert.are.same({ scheme = "wlcg", source = "default", path = dir .. "/bt_u" .. uid, exists = true,
      active = true }, list[1])
    assert.are.same({ scheme = "wlcg", source = "default", path = tmp_file, exists = true, active = false }, list[2])
  end)

  it("falls through from a missing XDG file to /tmp/bt_u<uid>", function()
    write(tmp_file, "tmp-token")
    local list = run({ uid = uid, env = { XDG_RUNTIME_DIR = dir } }, "wlcg")
    assert.are.same({ scheme = "wlcg", source = "default", path = dir .. "/bt_u" .. uid, exists = false,
      active = false }, list[1])
    assert.are.same({ scheme = "wlcg", source = "default", path = tmp_file, exists = true, active = true }, list[2])
  end)

  it("has no XDG candidate when XDG_RUNTIME_DIR is unset or empty", function()
    assert.are.same({ tmp_file }, paths(run({ uid = uid, env = {} }, "wlcg")))
    assert.are.same({ tmp_file }, paths(run({ uid = uid, env = { XDG_RUNTIME_DIR = "" } }, "wlcg")))
  end)

  it("has no active candidate when nothing yields a token", function()
    write(tmp_file, "\n")
    local list = run({ uid = uid, env = { BEARER_TOKEN = "", XDG_RUNTIME_DIR = dir } }, "wlcg")
    assert.is_nil(active_of(list))
    assert.is_true(list[3].empty)
  end)

  it("uses the effective uid by default", function()
    local list = run({ env = {} }, "wlcg")
    assert.are.equal("/tmp/bt_u" .. tp.euid(), list[1].path)
  end)
end)

describe("arvados", function()
  local settings
  before_each(function()
    settings = dir .. "/.config/arvados/settings.conf"
  end)

  it("takes ARVADOS_API_TOKEN and ARVADOS_API_HOST from the environment first", function()
    write(settings, "ARVADOS_API_HOST=file.example.org\nARVADOS_API_TOKEN=filesecret\n")
    local list = run({ env = { HOME = dir, ARVADOS_API_TOKEN = "envsecret", ARVADOS_API_HOST = "env.example.org" } },
      "arvados")
    assert.are.same({
      { scheme = "arvados", source = "env", variable = "ARVADOS_API_TOKEN", host = "env.example.org", exists = true,
        active = true },
      { scheme = "arvados", source = "default", path = settings, host = "env.example.org", exists = true,
        active = false },
    }, list)
    assert.is_false(mentions(list, "secret"))
  end)

  it("moves on from an empty ARVADOS_API_TOKEN to settings.conf", function()
    write(settings, "# comment\n\nARVADOS_API_HOST=file.example.org\r\nARVADOS_API_TOKEN=filesecret\n")
    local list = run({ env = { HOME = dir, ARVADOS_API_TOKEN = "" } }, "arvados")
    assert.are.same({
      { scheme = "arvados", source = "env", variable = "ARVADOS_API_TOKEN", host = "file.example.org",
        exists = false, empty = true, active = false },
      { scheme = "arvados", source = "default", path = settings, host = "file.example.org", exists = true,
        active = true },
    }, list)
    assert.is_false(mentions(list, "secret"))
  end)

  it("lets ARVADOS_API_HOST override the file's host", function()
    write(settings, "ARVADOS_API_HOST=file.example.org\nARVADOS_API_TOKEN=filesecret\n")
    local list = run({ env = { HOME = dir, ARVADOS_API_HOST = "env.example.org" } }, "arvados")
    assert.are.same({ { scheme = "arvados", source = "default", path = settings, host = "env.example.org",
      exists = true, active = true } }, list)
  end)

  it("does not use a settings.conf without a token", function()
    write(settings, "ARVADOS_API_HOST=file.example.org\nARVADOS_API_TOKEN=\n")
    local list = run({ env = { HOME = dir } }, "arvados")
    assert.are.same({ { scheme = "arvados", source = "default", path = settings, host = "file.example.org",
      exists = true, empty = true, active = false } }, list)
  end)

  it("lists a missing settings.conf", function()
    local list = run({ env = { HOME = dir } }, "arvados")
    assert.are.same({ { scheme = "arvados", source = "default", path = settings, exists = false, active = false } },
      list)
  end)

  it("finds the home directory in the password database without HOME", function()
    local list = run({ uid = 0, env = {} }, "arvados")
    assert.are.equal(tp.user(0).home .. "/.config/arvados/settings.conf", list[1].path)
  end)

  it("reports a settings.conf line without '=' as the problem, and uses nothing", function()
    write(settings, "ARVADOS_API_HOST=h\nARVADOS_API_TOKEN secret\n")
    local list = run({ env = { HOME = dir, ARVADOS_API_TOKEN = "envsecret" } }, "arvados")
    local problem = "malformed: " .. settings .. ": line 2: not a KEY=VALUE line: the Arvados Python SDK stops on it"
    assert.are.same({
      { scheme = "arvados", source = "env", variable = "ARVADOS_API_TOKEN", exists = true, active = false,
        problem = problem },
      { scheme = "arvados", source = "default", path = settings, exists = true, active = false, problem = problem },
    }, list)
    assert.is_false(mentions(list, "secret "))
  end)
end)

describe("discover", function()
  it("lists rucio, then wlcg, then arvados", function()
    local list = assert(discover({ uid = 3999999999, env = { LOGNAME = "a", HOME = dir, RUCIO_CONFIG = "/none" } }))
    local order = {}
    for _, c in ipairs(list) do
      if order[#order] ~= c.scheme then
        order[#order + 1] = c.scheme
      end
    end
    assert.are.same({ "rucio", "wlcg", "arvados" }, order)
    assert.are.same(list, assert(discover({ uid = 3999999999, env = { LOGNAME = "a", HOME = dir,
      RUCIO_CONFIG = "/none" } })))
    assert.are.equal(1, #scheme_of(list, "arvados"))
  end)

  it("does not read the process environment when env is given", function()
    local getenv = os.getenv
    local called = false
    -- luacheck: push ignore 122
    os.getenv = function(...) called = true return getenv(...) end
    local ok, list = pcall(discover, { uid = 3999999999, env = { LOGNAME = "a", RUCIO_CONFIG = "/none" } })
    os.getenv = getenv
    -- luacheck: pop
    assert.is_true(ok, list)
    assert.is_false(called)
  end)

  it("ignores the real environment when env is given, and reads it otherwise", function()
    local lua = "lua" .. _VERSION:match("%d+%.%d+")
    local script = 'local tp = require "tokenpolicy" '
      .. 'local a = tp.discover{ scheme = "wlcg", uid = 3999999999, env = {} } '
      .. 'local b = tp.discover{ scheme = "wlcg", uid = 3999999999 } '
      .. 'local c = tp.discover{ scheme = "arvados", env = { HOME = "/elsewhere" } } '
      .. 'print(#a, a[1].variable, b[1].variable, b[1].active, c[1].path)'
    local out = shell("BEARER_TOKEN=sentinel HOME=" .. quote(dir) .. " " .. lua .. " -e " .. quote(script))
    assert.are.equal("1\tnil\tBEARER_TOKEN\ttrue\t/elsewhere/.config/arvados/settings.conf\n", out)
  end)

  it("is the facade's discover", function()
    assert.are.equal(discover, tp.discover)
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() discover({ acount = "x" }) end,
      "bad argument #1 to 'discover' (unknown option 'acount')")
    assert.has_error(function() discover("rucio") end, "bad argument #1 to 'discover' (table expected, got string)")
    assert.has_error(function() discover({ scheme = "x509" }) end,
      "bad argument #1 to 'discover' (option 'scheme' must be one of rucio, wlcg, arvados)")
    assert.has_error(function() discover({ account = 1 }) end,
      "bad argument #1 to 'discover' (option 'account' must be string, got number)")
    assert.has_error(function() discover({ uid = -1 }) end,
      "bad argument #1 to 'discover' (option 'uid' must be a non-negative integer)")
    assert.has_error(function() discover({ uid = 1.5 }) end,
      "bad argument #1 to 'discover' (option 'uid' must be a non-negative integer)")
    assert.has_error(function() discover({ env = { HOME = 1 } }) end,
      "bad argument #1 to 'discover' (option 'env' must map strings to strings)")
    assert.has_error(function() rucio_config({ bogus = true }) end,
      "bad argument #1 to 'rucio_config' (unknown option 'bogus')")
  end)
end)
