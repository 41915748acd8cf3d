-- Hostile neighbours on a shared machine: a token directory swapped for a
-- link while logout runs, and a second user who got to the shared tmp
-- first. Two real users (tpuser, whose tokens these are, and tpneighbour)
-- and a sandbox whose "tmp" reaches the library only through `env`.
local tp = require "tokenpolicy"
local nb = require "helpers.neighbour"

local NOW = 1800000000
local TOKEN = "tpacct-/CN=tpuser-unknown-0123456789abcdef0123456789abcdef"

after_each(function() collectgarbage() end)

-- Logs out `arg.runs` times and tallies the actions: "remove ok",
-- "remove symlink", ... and "nothing to do". A raised error is kept.
local LOGOUT_LOOP = [[
local tally, errors, samples = {}, {}, {}
for _ = 1, arg.runs do
  local ok, report = pcall(tp.logout, { env = arg.env, uid = arg.uid, now = arg.now, all = true })
  if not ok then
    errors[#errors + 1] = tostring(report)
  elseif report.nothing_to_do then
    tally["nothing to do"] = (tally["nothing to do"] or 0) + 1
  else
    for _, a in ipairs(report.actions) do
      local key = a.action .. " " .. (a.ok and "ok" or tostring(a.code))
      tally[key] = (tally[key] or 0) + 1
      samples[key] = samples[key] or (a.target .. ": " .. tostring(a.message))
    end
  end
end
return { tally = tally, errors = errors, samples = samples }
]]

describe("logout while a neighbour swaps the token directory for a link", function()
  local users, s
  before_each(function()
    users = nb.users()
    s = nb.sandbox(users)
  end)
  after_each(function() nb.remove(s) end)

  -- A directory with what logout removes in a token directory: the token,
  -- its expiry, a Rucio leftover and a subdirectory; all of them the
  -- user's, so that only refusing to follow the link can protect them.
  local function victim(dir_owner, mode)
    local dir = s.dir .. "/victim"
    nb.mkdir(dir, dir_owner, mode)
    for _, name in ipairs { "auth_token_for_account_tpacct", "auth_token_exp_for_account_tpacct", "tmpabcd1234" } do
      nb.file(dir .. "/" .. name, "victim's " .. name, users.user)
    end
    nb.mkdir(dir .. "/sub", users.user, "700")
    nb.file(dir .. "/sub/auth_token_for_account_tpacct", "victim's nested token", users.user)
    nb.file(dir .. "/precious", "root's file", { uid = 0, gid = 0 })
    return dir
  end

  -- 1,000 logouts (every account, every layout) run as `as` with `uid`
  -- while the swapper trades `.rucio_tpuser` and `.rucio_tpuser@swap` (the
  -- link, a VO directory to logout) in `parent` as fast as it can.
  local function race(as, uid, link_owner, victim_dir)
    local before = nb.fingerprint(victim_dir)
    local stage = s.dir .. "/stage"
    nb.mkdir(stage, { uid = 0, gid = 0 }, "700")
    local swapper = nb.swapper {
      parent = s.base, name = ".rucio_tpuser", link = ".rucio_tpuser@swap", victim = victim_dir,
      link_owner = link_owner, dir_owner = users.user, token = TOKEN, stage = stage,
      files = { "auth_token_for_account_tpacct", "auth_token_exp_for_account_tpacct", "tmpabcd1234" },
    }
    finally(swapper.stop)
    local result, err = nb.run(as, LOGOUT_LOOP, { runs = 1000, env = s.env, uid = uid, now = NOW }, 600)
    local swaps = swapper.stop()
    assert.is_table(result, err)
    assert.are.same({}, result.errors)
    assert.are.same(before, nb.fingerprint(victim_dir))
    -- The race was run: the swapper kept swapping, and logout both
    -- removed the real directory's files and met the link.
    assert.is_true(swaps > 1000, "swaps: " .. swaps)
    assert.is_true((result.tally["remove ok"] or 0) > 0)
    assert.is_true((result.tally["remove symlink"] or 0) > 0)
    -- Every outcome is one of these: removed, or the link refused.
    local outcomes = {}
    for key in pairs(result.tally) do outcomes[#outcomes + 1] = key end
    table.sort(outcomes)
    for _, key in ipairs(outcomes) do
      -- (io: remove_tree found the directory swapped or refilled when it
      -- came to remove it, and left it)
      assert.is_truthy(({ ["remove ok"] = true, ["remove symlink"] = true, ["remove not_found"] = true,
                          ["remove io"] = true, ["nothing to do"] = true })[key], "unexpected outcome " .. key)
    end
  end

  it("as root acting for the user (opts.uid): root's directory of the user's files is never touched", function()
    -- The user plants the link in their own tmp directory, hoping that
    -- root removes files in a directory the user cannot write.
    nb.mkdir(s.base, users.user, "700")
    race(nil, users.user.uid, users.user, victim({ uid = 0, gid = 0 }, "755"))
  end)

  it("as the user (runuser), in a tmp directory the neighbour made theirs: the user's other files are never touched",
    function()
      -- The neighbour made <tmp>/tpuser first, writable by all, so the user's
      -- Rucio client made its directory in it; the neighbour can rename it.
      nb.mkdir(s.base, users.neighbour, "777")
      race(users.user, nil, users.neighbour, victim(users.user, "700"))
    end)
end)

-- Runs `arg.ops` in order and says how each ended, with paths shown from
-- the sandbox's tmp ("~tmp/...") and the sandbox ("~/..."):
--   {"read", path}   "ok" or read_token's code
--   {"write", path}  "ok" or write_token's code
--   {"status"}       one "path findings" line per entry ("-": none)
--   {"logout"}       one "action outcome target" line per action, or
--                    "nothing to do"
local OPS = [[
local out = {}
local opts = arg.uid and { uid = arg.uid } or nil
local function short(path)
  local i = path:find(arg.tmp, 1, true)
  path = path:gsub("/bt_u%d+$", "/bt_u<uid>")
  if i == 1 then return "~tmp" .. path:sub(#arg.tmp + 1) end
  i = path:find(arg.dir, 1, true)
  return i == 1 and ("~" .. path:sub(#arg.dir + 1)) or path
end
local function outcome(ok, _, code) return ok and "ok" or code end
local common = { env = arg.env, uid = arg.uid, now = arg.now }
for i, op in ipairs(arg.ops) do
  local kind = op[1]
  if kind == "read" then
    out[i] = outcome(tp.read_token(op[2], opts))
  elseif kind == "write" then
    out[i] = outcome(tp.write_token(op[2], "new.token.of.tpuser", opts))
  elseif kind == "status" then
    local lines = {}
    for _, e in ipairs(tp.status(common)) do
      lines[#lines + 1] = short(e.path or ("$" .. e.variable)) .. " "
        .. (#e.findings > 0 and table.concat(e.findings, ",") or "-")
    end
    out[i] = lines
  elseif kind == "logout" then
    local report = tp.logout({ env = arg.env, uid = arg.uid, now = arg.now, all = true })
    local lines = {}
    for _, a in ipairs(report.actions) do
      lines[#lines + 1] = a.action .. " " .. (a.ok and "ok" or tostring(a.code)) .. " " .. short(a.target)
    end
    out[i] = report.nothing_to_do and { "nothing to do" } or lines
  end
end
return out
]]

-- The usual calls on the sandbox's path `key` ("token", "bt"): read it,
-- write it, status, logout.
local function usual(key)
  return function(s) return { { "read", s[key] }, { "write", s[key] }, { "status" }, { "logout" } } end
end

-- What the neighbour (N) made before the user (U) came, each case with
-- what every call gives; `keep` are the paths that must come through
-- unchanged (the neighbour's things and the user's other files).
local CASES = {
  {
    name = "<tmp>/tpuser is the neighbour's (0755), with a Rucio directory and a token of theirs",
    setup = function(s, u)
      nb.mkdir(s.base, u.neighbour, "755")
      nb.mkdir(s.rucio, u.neighbour, "755")
      nb.file(s.token, TOKEN, u.neighbour, "644")
      nb.file(s.expiry, "1800003600", u.neighbour, "644")
    end,
    keep = function(s) return { s.base } end,
    ops = function(s) return { { "read", s.token }, { "read", s.expiry }, { "write", s.token }, { "status" },
                               { "logout" } } end,
    expect = {
      "not_owner", "not_owner", "not_owner",
      { "~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct not_owner,insecure_permissions" },
      { "remove not_owner ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct",
        "remove not_owner ~tmp/tpuser/.rucio_tpuser/auth_token_exp_for_account_tpacct" },
    },
  },
  {
    name = "<tmp>/tpuser is the neighbour's and open to all (0777): the user's Rucio directory beside one of theirs",
    setup = function(s, u)
      nb.mkdir(s.base, u.neighbour, "777")
      nb.mkdir(s.rucio, u.user, "700")
      nb.file(s.token, TOKEN, u.user)
      nb.file(s.expiry, "1800003600", u.user)
      nb.mkdir(s.rucio .. "@atlas", u.neighbour, "755")
      nb.file(s.rucio .. "@atlas/auth_token_for_account_tpacct", TOKEN, u.neighbour, "644")
    end,
    keep = function(s) return { s.rucio .. "@atlas" } end,
    ops = function(s) return { { "read", s.token }, { "write", s.token }, { "status" }, { "logout" },
                               { "status" } } end,
    expect = {
      "ok", "not_owner",
      {
        "~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct not_owner,insecure_permissions",
        "~tmp/tpuser/.rucio_tpuser@atlas/auth_token_for_account_tpacct not_owner,insecure_permissions",
      },
      {
        "remove ok ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct",
        "remove ok ~tmp/tpuser/.rucio_tpuser/auth_token_exp_for_account_tpacct",
        "remove not_owner ~tmp/tpuser/.rucio_tpuser@atlas/auth_token_for_account_tpacct",
        "remove ok ~tmp/tpuser/.rucio_tpuser",
      },
      { "~tmp/tpuser/.rucio_tpuser@atlas/auth_token_for_account_tpacct not_owner,insecure_permissions" },
    },
  },
  {
    name = "<tmp>/tpuser is the neighbour's link to a directory of theirs",
    setup = function(s, u)
      nb.mkdir(s.dir .. "/theirs/.rucio_tpuser", u.neighbour, "755")
      nb.file(s.dir .. "/theirs/.rucio_tpuser/auth_token_for_account_tpacct", TOKEN, u.neighbour, "644")
      nb.link(s.dir .. "/theirs", s.base, u.neighbour)
    end,
    keep = function(s) return { s.base, s.dir .. "/theirs" } end,
    ops = usual "token",
    expect = {
      "symlink",
      "symlink",
      {
        "~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct not_owner,insecure_permissions,symlink",
      },
      { "remove symlink ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct" },
    },
  },
  {
    name = "<tmp>/tpuser is the neighbour's link to a directory of the user's",
    setup = function(s, u)
      nb.mkdir(s.dir .. "/mine/.rucio_tpuser", u.user, "700")
      nb.file(s.dir .. "/mine/.rucio_tpuser/auth_token_for_account_tpacct", TOKEN, u.user)
      nb.link(s.dir .. "/mine", s.base, u.neighbour)
    end,
    keep = function(s) return { s.base, s.dir .. "/mine" } end,
    ops = usual "token",
    expect = {
      "symlink",
      "symlink",
      { "~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct symlink" },
      { "remove symlink ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct" },
    },
  },
  {
    name = "the Rucio directory is the neighbour's link to a directory of the user's",
    setup = function(s, u)
      nb.mkdir(s.base, u.neighbour, "777")
      nb.mkdir(s.dir .. "/mine", u.user, "700")
      nb.file(s.dir .. "/mine/auth_token_for_account_tpacct", TOKEN, u.user)
      nb.link(s.dir .. "/mine", s.rucio, u.neighbour)
    end,
    keep = function(s) return { s.rucio, s.dir .. "/mine" } end,
    ops = usual "token",
    expect = {
      "symlink",
      "not_owner",
      {
        "~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct symlink,not_owner,insecure_permissions",
      },
      { "remove symlink ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct" },
    },
  },
  {
    name = "the token and its expiry are the neighbour's FIFOs",
    setup = function(s, u)
      nb.mkdir(s.base, u.neighbour, "777")
      nb.mkdir(s.rucio, u.neighbour, "755")
      nb.fifo(s.token, u.neighbour)
      nb.fifo(s.expiry, u.neighbour)
    end,
    keep = function(s) return { s.base } end,
    ops = function(s) return { { "read", s.token }, { "read", s.expiry }, { "write", s.token }, { "status" },
                               { "logout" } } end,
    expect = {
      "io",
      "io",
      "not_owner",
      {
        "~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct not_owner,io,insecure_permissions",
      },
      {
        "remove not_owner ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct",
        "remove not_owner ~tmp/tpuser/.rucio_tpuser/auth_token_exp_for_account_tpacct",
      },
    },
  },
  {
    name = "<tmp>/tpuser is the neighbour's FIFO",
    setup = function(s, u) nb.fifo(s.base, u.neighbour) end,
    keep = function(s) return { s.base } end,
    ops = usual "token",
    expect = { "not_found", "not_found", {  }, { "nothing to do" } },
  },
  {
    name = "bt_u<uid> is the neighbour's FIFO",
    setup = function(s, u) nb.fifo(s.bt, u.neighbour) end,
    keep = function(s) return { s.bt } end,
    ops = usual "bt",
    expect = {
      "io",
      "not_owner",
      { "~tmp/bt_u<uid> problem,not_owner,io" },
      { "remove not_owner ~tmp/bt_u<uid>" },
    },
  },
  {
    name = "bt_u<uid> is the neighbour's socket",
    setup = function(s, u) nb.socket(s.bt, u.neighbour) end,
    keep = function(s) return { s.bt } end,
    ops = usual "bt",
    expect = {
      "io",
      "not_owner",
      { "~tmp/bt_u<uid> problem,not_owner,io" },
      { "remove not_owner ~tmp/bt_u<uid>" },
    },
  },
  {
    name = "bt_u<uid> is the neighbour's file, with a token of theirs",
    setup = function(s, u) nb.file(s.bt, "neighbours.own.token", u.neighbour, "644") end,
    keep = function(s) return { s.bt } end,
    ops = usual "bt",
    expect = {
      "not_owner",
      "not_owner",
      { "~tmp/bt_u<uid> not_owner,insecure_permissions" },
      { "remove not_owner ~tmp/bt_u<uid>" },
    },
  },
  {
    name = "bt_u<uid> is the neighbour's link to a file of the user's",
    setup = function(s, u)
      nb.mkdir(s.dir .. "/mine", u.user, "700")
      nb.file(s.dir .. "/mine/secret", "users.other.secret", u.user)
      nb.link(s.dir .. "/mine/secret", s.bt, u.neighbour)
    end,
    keep = function(s) return { s.bt, s.dir .. "/mine" } end,
    ops = usual "bt",
    expect = { "symlink", "not_owner", { "~tmp/bt_u<uid> symlink" }, { "remove not_owner ~tmp/bt_u<uid>" } },
  },
  {
    name = "bt_u<uid> is a hard link to a file of the user's",
    setup = function(s, u)
      nb.mkdir(s.dir .. "/mine", u.user, "700")
      nb.file(s.dir .. "/mine/secret", "users.other.secret", u.user)
      assert(os.execute("ln " .. s.dir .. "/mine/secret " .. s.bt))
    end,
    keep = function(s) return { s.dir .. "/mine/secret" } end,
    ops = function(s) return { { "read", s.bt }, { "write", s.bt }, { "read", s.bt }, { "status" }, { "logout" } } end,
    expect = { "ok", "ok", "ok", { "~tmp/bt_u<uid> -" }, { "remove ok ~tmp/bt_u<uid>" } },
  },
  {
    name = "BEARER_TOKEN_FILE names the neighbour's FIFO",
    env = function(s) return { BEARER_TOKEN_FILE = s.tmp .. "/shared-token" } end,
    setup = function(s, u) nb.fifo(s.tmp .. "/shared-token", u.neighbour) end,
    keep = function(s) return { s.tmp .. "/shared-token" } end,
    ops = function(s) return { { "read", s.tmp .. "/shared-token" }, { "status" }, { "logout" } } end,
    expect = {
      "io",
      { "~tmp/shared-token problem,not_owner,io" },
      { "remove not_owner ~tmp/shared-token" },
    },
  },
  {
    name = "RUCIO_CONFIG names the neighbour's FIFO",
    env = function(s) return { RUCIO_CONFIG = s.tmp .. "/rucio.cfg" } end,
    setup = function(s, u)
      nb.fifo(s.tmp .. "/rucio.cfg", u.neighbour)
      nb.mkdir(s.base, u.user, "700")
      nb.mkdir(s.rucio, u.user, "700")
      nb.file(s.token, TOKEN, u.user)
    end,
    keep = function(s) return { s.tmp .. "/rucio.cfg" } end,
    ops = function() return { { "status" }, { "logout" } } end,
    expect = {
      { "~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct -" },
      {
        "remove ok ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct",
        "remove ok ~tmp/tpuser/.rucio_tpuser",
      },
    },
  },
}

describe("a neighbour who got to the shared tmp first", function()
  local users, s
  before_each(function()
    users = nb.users()
    s = nb.sandbox(users)
  end)
  after_each(function() nb.remove(s) end)

  for _, case in ipairs(CASES) do
    for _, mode in ipairs { "root acting for the user", "the user" } do
      it(case.name .. " (" .. mode .. ")", function()
        case.setup(s, users)
        local keep = {}
        for _, path in ipairs(case.keep(s)) do keep[path] = nb.fingerprint(path) end
        local as, uid = nil, users.user.uid
        if mode == "the user" then as, uid = users.user, nil end
        local env = s.env
        if case.env then
          env = {}
          for k, v in pairs(s.env) do env[k] = v end
          for k, v in pairs(case.env(s)) do env[k] = v end
        end
        -- Nothing may block: the whole run has 20 s, a FIFO read alone
        -- would never end.
        local result, err = nb.run(as, OPS, { ops = case.ops(s), env = env, uid = uid, now = NOW, tmp = s.tmp,
                                              dir = s.dir }, 20)
        assert.is_table(result, err)
        if not case.expect then print(case.name, mode, tp.json_encode(result)) end
        assert.are.same(case.expect, result)
        for path, before in pairs(keep) do
          assert.are.same(before, nb.fingerprint(path), path)
        end
      end)
    end
  end
end)

describe("logout's code for a Rucio directory it leaves in place", function()
  local users, s
  before_each(function()
    users = nb.users()
    s = nb.sandbox(users)
    nb.mkdir(s.rucio, users.user, "700")
    nb.file(s.token, TOKEN, users.user)
  end)
  after_each(function() nb.remove(s) end)

  local function logout_lines()
    local result, err = nb.run(nil, OPS, { ops = { { "logout" } }, env = s.env, uid = users.user.uid, now = NOW,
                                           tmp = s.tmp, dir = s.dir }, 20)
    assert.is_table(result, err)
    return result[1]
  end

  it("is not_owner when another user's entry keeps it", function()
    -- a leftover's name, but the neighbour's
    nb.file(s.rucio .. "/tmpabcd1234", "", users.neighbour)
    assert.are.same({
      "remove ok ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct",
      "remove not_owner ~tmp/tpuser/.rucio_tpuser",
    }, logout_lines())
  end)

  it("is io when something else keeps it (a leftover nested deeper than remove_tree goes)", function()
    nb.mkdir(s.rucio .. "/tmpabcd1234" .. ("/d"):rep(33), users.user, "700")
    assert(os.execute("chown -R " .. users.user.uid .. " " .. s.rucio))
    assert.are.same({
      "remove ok ~tmp/tpuser/.rucio_tpuser/auth_token_for_account_tpacct",
      "remove io ~tmp/tpuser/.rucio_tpuser",
    }, logout_lines())
  end)
end)

describe("a link among the directories of a token path", function()
  local users, s
  before_each(function()
    users = nb.users()
    s = nb.sandbox(users)
    -- the user's own link to a directory of theirs, holding a token
    nb.mkdir(s.dir .. "/mine", users.user, "700")
    nb.file(s.dir .. "/mine/token", "users.own.token", users.user)
    nb.link(s.dir .. "/mine", s.dir .. "/linked", users.user)
  end)
  after_each(function() nb.remove(s) end)

  it("is not read through by read_token, which walks as write_token (only root's links are followed)", function()
    local result, err = nb.run(users.user, [[
local _, msg, code = tp.read_token(arg.path)
return { code, msg }
]], { path = s.dir .. "/linked/token" }, 20)
    assert.is_table(result, err)
    assert.are.same({ "symlink", "symlink: read_token: " .. s.dir .. "/linked is a symbolic link (owned by uid "
      .. users.user.uid .. " in a directory of uid 0); only root's links in directories only root can change are "
      .. "followed" }, result)
  end)

  it("still leaves a BEARER_TOKEN_FILE active in discovery: the tools follow it", function()
    local env = { BEARER_TOKEN_FILE = s.dir .. "/linked/token", XDG_RUNTIME_DIR = s.tmp }
    local result, err = nb.run(users.user, [[
local c = tp.discover({ scheme = "wlcg", env = arg.env })[1]
return { c.variable, c.exists, c.active, c.empty == nil, c.problem == nil }
]], { env = env }, 20)
    assert.is_table(result, err)
    assert.are.same({ "BEARER_TOKEN_FILE", true, true, true, true }, result)
  end)
end)
