-- tokenpolicy.session: status, logout and switch_account over a sandbox
-- holding Rucio (several accounts and VOs, a legacy layout), WLCG and
-- Arvados tokens, with an explicit environment; real peers for revocation.
local tp = require "tokenpolicy"
local oidc = require "helpers.oidc"
local http_peer = require "helpers.http_peer"
local expect = require "helpers.expect"

local NOW = 1800000000
local UID = tp.euid()
local NATIVE = "root-/DC=ch/CN=Joe Doe-unknown-0123456789abcdef0123456789abcdef"
local ARV = "v2/zzzzz-gj3su-0123456789abcde/3kg6k6lzmp9kj5cpkcox0s5x8r1u4j7w2q"

-- Other users are simulated with chown to an unused uid, which needs root.
local it_root = UID == 0 and it or pending
local OTHER = 54321

local hmac = tp.keys('{"kty":"oct","kid":"k","k":"' .. tp.b64url_encode(("s"):rep(32)) .. '"}')

local function jwt(claims)
  return assert(tp.sign(claims, hmac, { alg = "HS256" }))
end

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

local function write(path, text, mode)
  sh("mkdir -p '" .. path:match("^(.*)/") .. "'")
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  sh(("chmod %s '%s'"):format(mode or "600", path))
end

-- A link planted by a neighbour: theirs when we can give it to them (as
-- root, a link of root's own in a root-only directory would be followed,
-- like /var/run; any other user's links never are).
local function plant_link(target, link)
  sh(("ln -s '%s' '%s'"):format(target, link))
  if UID == 0 then
    sh(("chown -h %d '%s'"):format(OTHER, link))
  end
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

local function exists(path)
  return tp.stat(path) ~= nil
end

-- A sandbox: the user jdoe, Rucio's tmp at <dir>/tmp, HOME, XDG runtime.
local function sandbox()
  local dir = expect.new_dir()
  local s = { dir = dir, tmp = dir .. "/tmp", home = dir .. "/home", run = dir .. "/run" }
  sh(("mkdir -p '%s' '%s' '%s'"):format(s.tmp, s.home, s.run))
  s.cfg = dir .. "/rucio.cfg"
  write(s.cfg, "# site config\n[client]\naccount = root\nauth_type = userpass\n", "644")
  s.env = { LOGNAME = "jdoe", TMPDIR = s.tmp, RUCIO_CONFIG = s.cfg, HOME = s.home, XDG_RUNTIME_DIR = s.run }
  s.rucio = s.tmp .. "/jdoe/.rucio_jdoe"
  s.bt = s.run .. "/bt_u" .. UID
  s.settings = s.home .. "/.config/arvados/settings.conf"
  return s
end

local function rucio_token(s, dirname, account, token, exp)
  local dir = s.tmp .. "/jdoe/" .. dirname
  assert(tp.write_token(dir .. "/auth_token_for_account_" .. account, token))
  if exp then
    assert(tp.write_token(dir .. "/auth_token_exp_for_account_" .. account, tostring(exp)))
  end
  return dir .. "/auth_token_for_account_" .. account
end

-- The fields of entries that tests compare exactly.
local function summary(list)
  local out = {}
  for i, e in ipairs(list) do
    out[i] = ("%s %s %s %s %s %s %s %s %s %s"):format(e.scheme, tostring(e.account), tostring(e.vo), e.source,
      e.path and e.path:gsub("^.*/tmp/jdoe/", "~tmp/"):gsub("^.*/home/", "~home/"):gsub("^.*/run/", "~run/")
        or ("$" .. e.variable),
      e.active and "active" or "-", tostring(e.kind), tostring(e.state), tostring(e.exp),
      #e.findings > 0 and table.concat(e.findings, ",") or "-")
  end
  return out
end

after_each(function() collectgarbage() end)

describe("session.status", function()
  local s
  before_each(function() s = sandbox() end)
  after_each(function() expect.remove_dir(s.dir) end)

  it("lists every token of every scheme, account, VO and layout, never the token", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    rucio_token(s, ".rucio_jdoe", "alice", jwt { sub = "alice", iss = "https://iam.example", aud = "rucio",
      scope = "storage.read:/", iat = NOW - 60, exp = NOW + 600, jti = "j1" })
    rucio_token(s, ".rucio_jdoe@atlas", "bob", NATIVE:gsub("^root", "bob"), NOW - 10)
    assert(tp.write_token(s.tmp .. "/jdoe/.rucio_root/auth_token_root", NATIVE))
    write(s.bt, jwt { sub = "carol", iss = "https://wlcg.example", exp = NOW + 7200, iat = NOW } .. "\n", "644")
    write(s.settings, "ARVADOS_API_HOST=arv.example\nARVADOS_API_TOKEN=" .. ARV .. "\n")
    local list = tp.status { env = s.env, uid = UID, now = NOW }
    assert.are.same({
      "rucio root def default ~tmp/.rucio_jdoe/auth_token_for_account_root active rucio valid " .. (NOW + 3600) .. " -",
      "rucio root def legacy ~tmp/.rucio_root/auth_token_root - rucio unknown nil -",
      "rucio alice def cache ~tmp/.rucio_jdoe/auth_token_for_account_alice - jwt valid " .. (NOW + 600) .. " -",
      "rucio bob atlas cache ~tmp/.rucio_jdoe@atlas/auth_token_for_account_bob - rucio expired " .. (NOW - 10)
        .. " expired",
      "wlcg nil nil default ~run/bt_u" .. UID .. " active jwt valid " .. (NOW + 7200) .. " insecure_permissions",
      "arvados nil nil default ~home/.config/arvados/settings.conf active arvados_v2 unknown nil -",
    }, summary(list))
    local alice = list[3]
    assert.are.equal("alice", alice.sub)
    assert.are.equal("https://iam.example", alice.iss)
    assert.are.equal("rucio", alice.aud)
    assert.are.equal("storage.read:/", alice.scope)
    assert.are.equal(NOW - 60, alice.iat)
    assert.is_true(alice.refresh_due) -- 10 minutes left, Rucio refreshes 20 minutes before
    assert.is_false(list[1].refresh_due)
    local text = tostring(list)
    assert.is_nil(text:find("0123456789abcdef", 1, true))
    assert.is_nil(text:find("3kg6k6lz", 1, true))
    local lines = {}
    for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(7, #lines)
    assert.is_truthy(lines[1]:find(
      "^scheme%s+account%s+vo%s+source%s+path%s+active%s+kind%s+state%s+expires%s+findings$"))
    assert.are.equal(lines[1]:find("path"), lines[2]:find(s.rucio, 1, true))
    assert.is_nil(text:find(NATIVE, 1, true))
  end)

  it("reads the refresh window from rucio.cfg, and judges against a given policy", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 1800)
    write(s.cfg, "[client]\naccount = root\nauth_oidc_refresh_before_exp = 40\n", "644")
    assert.is_true(tp.status({ env = s.env, uid = UID, now = NOW, scheme = "rucio" })[1].refresh_due)
    local strict = tp.policy { refresh_before_exp = 60 }
    assert.is_false(tp.status({ env = s.env, uid = UID, now = NOW, scheme = "rucio", policy = strict })[1]
      .refresh_due)
  end)

  it("shows environment tokens with their variable and no path", function()
    local env = { BEARER_TOKEN = jwt { sub = "dave", exp = NOW - 1 }, ARVADOS_API_TOKEN = ARV, HOME = s.home,
                  LOGNAME = "jdoe", TMPDIR = s.tmp, RUCIO_CONFIG = s.cfg }
    assert.are.same({
      "wlcg nil nil env $BEARER_TOKEN active jwt expired " .. (NOW - 1) .. " expired",
      "arvados nil nil env $ARVADOS_API_TOKEN active arvados_v2 unknown nil -",
    }, summary(tp.status { env = env, uid = UID, now = NOW }))
  end)

  it("filters by scheme and by Rucio account", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    rucio_token(s, ".rucio_jdoe", "alice", NATIVE:gsub("^root", "alice"), NOW + 3600)
    write(s.bt, jwt { sub = "carol", exp = NOW + 7200 })
    assert.are.same({ "wlcg nil nil default ~run/bt_u" .. UID .. " active jwt valid " .. (NOW + 7200) .. " -" },
      summary(tp.status { env = s.env, uid = UID, now = NOW, scheme = "wlcg" }))
    assert.are.same({ "rucio alice def default ~tmp/.rucio_jdoe/auth_token_for_account_alice active rucio valid "
      .. (NOW + 3600) .. " -" }, summary(tp.status { env = s.env, uid = UID, now = NOW, scheme = "rucio",
      account = "alice" }))
  end)

  it("lists the WLCG token Rucio uses with OIDC under rucio when only Rucio's are asked for", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    write(s.bt, jwt { sub = "carol", exp = NOW + 7200 })
    s.env.RUCIO_AUTH_TYPE = "oidc"
    local bt = "~run/bt_u" .. UID .. " active jwt valid " .. (NOW + 7200) .. " -"
    -- in discovery's order: Rucio with OIDC reads the WLCG token first
    assert.are.same({
      "rucio root def wlcg " .. bt,
      "rucio root def default ~tmp/.rucio_jdoe/auth_token_for_account_root - rucio valid " .. (NOW + 3600) .. " -",
    }, summary(tp.status { env = s.env, uid = UID, now = NOW, scheme = "rucio" }))
    -- every scheme: that file once, under wlcg
    assert.are.same({
      "rucio root def default ~tmp/.rucio_jdoe/auth_token_for_account_root - rucio valid " .. (NOW + 3600) .. " -",
      "wlcg nil nil default " .. bt,
    }, summary(tp.status { env = s.env, uid = UID, now = NOW }))
    -- logging out of Rucio alone leaves the token other WLCG tools share
    local report = assert(tp.logout { env = s.env, uid = UID, now = NOW, scheme = "rucio", dry_run = true })
    assert.is_nil(tostring(report):find("bt_u", 1, true))
  end)

  it("reports a FIFO at bt_u<uid> without hanging", function()
    sh("mkfifo '" .. s.bt .. "'")
    local list = tp.status { env = s.env, uid = UID, now = NOW, scheme = "wlcg" }
    assert.are.same({ "wlcg nil nil default ~run/bt_u" .. UID .. " - nil nil nil problem,io" }, summary(list))
    assert.are.equal("io: " .. s.bt .. " is a FIFO (named pipe), not a regular file", list[1].problem)
  end)

  it_root("reports a token file of another uid, and a FIFO beside it", function()
    sh("mkfifo '" .. s.bt .. "'")
    local path = rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    sh("chown 54321 '" .. path .. "'")
    local list = tp.status { env = s.env, uid = UID, now = NOW }
    assert.are.same({
      "rucio root def default ~tmp/.rucio_jdoe/auth_token_for_account_root active nil valid " .. (NOW + 3600)
        .. " not_owner",
      "wlcg nil nil default ~run/bt_u" .. UID .. " - nil nil nil problem,io",
    }, summary(list))
  end)

  it("reports a token directory that is a symbolic link, without following it", function()
    local victim = s.dir .. "/victim"
    rucio_token(s, "../../victim", "root", NATIVE, NOW + 3600)
    -- planted by a neighbour (uid 54321) before jdoe's first login
    sh(("mkdir -p '%s/jdoe'"):format(s.tmp))
    plant_link(victim, s.rucio)
    local list = tp.status { env = s.env, uid = UID, now = NOW, scheme = "rucio" }
    assert.are.equal(1, #list)
    assert.are.same({ "symlink" }, list[1].findings)
    assert.is_nil(list[1].kind)
    assert.is_nil(list[1].exp)
  end)

  it("marks a Rucio token the client could not use because its config is missing", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    os.remove(s.cfg)
    local list = tp.status { env = s.env, uid = UID, now = NOW, scheme = "rucio", account = "root" }
    assert.are.equal(1, #list)
    assert.are.same({ "problem" }, list[1].findings)
    assert.are.equal("not_found: RUCIO_CONFIG names " .. s.cfg .. ", which does not exist: the Rucio client stops "
      .. "(ConfigNotFound)", list[1].problem)
    assert.is_false(list[1].active)
  end)

  it("raises for misuse", function()
    assert.has_error(function() tp.status { nope = 1 } end, "bad argument #1 to 'status' (unknown option 'nope')")
    assert.has_error(function() tp.status { scheme = "x" } end,
      "bad argument #1 to 'status' (option 'scheme' must be one of rucio, wlcg, arvados)")
    assert.has_error(function() tp.status { policy = {} } end,
      "bad argument #1 to 'status' (option 'policy' must be a tokenpolicy.Policy (tp.policy{...}))")
  end)
end)

-- An action as "action target ok code" with the sandbox's prefix cut.
local function actions(report, dir)
  local out = {}
  for i, a in ipairs(report.actions) do
    out[i] = ("%s %s %s %s"):format(a.action, (a.target:gsub(dir, "~", 1)), tostring(a.ok), tostring(a.code))
  end
  return out
end

describe("session.logout", function()
  local s
  before_each(function() s = sandbox() end)
  after_each(function() expect.remove_dir(s.dir) end)

  local function opts(extra)
    local o = { env = s.env, uid = UID, now = NOW }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("removes the active account's token, its expiry file, and the directory when only leftovers remain", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    write(s.rucio .. "/tmpab12_x9z", "half-written") -- a crashed mkstemp write
    local report = tp.logout(opts())
    assert.are.same({
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_exp_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe true nil",
    }, actions(report, s.dir))
    assert.is_true(report.ok)
    assert.is_false(report.nothing_to_do)
    assert.is_false(exists(s.rucio))
    assert.is_true(exists(s.tmp .. "/jdoe"))
  end)

  it("leaves other accounts' tokens and their directory, and names an account", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    local alice = rucio_token(s, ".rucio_jdoe", "alice", NATIVE:gsub("^root", "alice"), NOW + 3600)
    write(s.bt, jwt { sub = "carol", exp = NOW + 60 })
    assert.are.same({
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_exp_for_account_root true nil",
    }, actions(tp.logout(opts { account = "root" }), s.dir))
    assert.are.equal(NATIVE:gsub("^root", "alice"), read(alice))
    assert.is_true(exists(s.bt)) -- an account names a Rucio account only
    assert.are.same({
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_for_account_alice true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_exp_for_account_alice true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe true nil",
    }, actions(tp.logout(opts { account = "alice", scheme = "rucio" }), s.dir))
  end)

  it("with all, ends every account, VO, layout and scheme; a second logout has nothing to do", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    rucio_token(s, ".rucio_jdoe@atlas", "bob", NATIVE:gsub("^root", "bob"), NOW + 3600)
    assert(tp.write_token(s.tmp .. "/jdoe/.rucio_root/auth_token_root", NATIVE))
    write(s.bt, jwt { sub = "carol", exp = NOW + 60 })
    write(s.settings, "# mine\nARVADOS_API_HOST=arv.example\nARVADOS_API_TOKEN=" .. ARV .. "\nOTHER=1\n", "640")
    local before = tp.stat(s.settings)
    local dry = tp.logout(opts { all = true, dry_run = true })
    local expected = {
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_exp_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_root/auth_token_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe@atlas/auth_token_for_account_bob true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe@atlas/auth_token_exp_for_account_bob true nil",
      "remove ~/run/bt_u" .. UID .. " true nil",
      "remove ~/home/.config/arvados/settings.conf (ARVADOS_API_TOKEN) true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe true nil",
      "remove ~/tmp/jdoe/.rucio_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe@atlas true nil",
    }
    assert.are.same(expected, actions(dry, s.dir))
    assert.is_true(dry.dry_run)
    assert.is_truthy(tostring(dry):find("\ndry run: nothing was changed$"))
    assert.is_true(exists(s.rucio .. "/auth_token_for_account_root"))
    assert.is_true(exists(s.bt))
    local report = tp.logout(opts { all = true })
    assert.are.same(expected, actions(report, s.dir))
    assert.is_true(report.ok)
    assert.are.same({ "." , "..", "jdoe" }, { ".", "..", table.unpack(tp.list_dir(s.tmp)) })
    assert.are.same({}, tp.list_dir(s.tmp .. "/jdoe"))
    assert.is_false(exists(s.bt))
    assert.are.equal("# mine\nARVADOS_API_HOST=arv.example\nOTHER=1\n", read(s.settings))
    assert.are.equal(before.mode, tp.stat(s.settings).mode)
    local again = tp.logout(opts { all = true })
    assert.is_true(again.nothing_to_do)
    assert.is_true(again.ok)
    assert.are.same({}, again.actions)
    assert.are.equal("nothing to do: no tokens found", tostring(again))
  end)

  it("says which variable to unset for an environment token", function()
    local env = { BEARER_TOKEN = jwt { sub = "dave", exp = NOW + 60 }, LOGNAME = "jdoe", TMPDIR = s.tmp,
                  RUCIO_CONFIG = s.cfg, HOME = s.home }
    local report = tp.logout { env = env, uid = UID, now = NOW }
    assert.are.same({ "instruction $BEARER_TOKEN false environment" }, actions(report, s.dir))
    assert.are.equal("unset BEARER_TOKEN in the shell that set it: a program cannot change its parent's "
      .. "environment", report.actions[1].message)
    assert.is_false(report.ok)
  end)

  describe("among hostile neighbours", function()
    it("leaves a victim directory behind a linked token directory untouched", function()
      local victim = s.dir .. "/victim"
      rucio_token(s, "../../victim", "root", NATIVE, NOW + 3600)
      write(victim .. "/precious", "keep me")
      sh(("mkdir -p '%s/jdoe'"):format(s.tmp))
    plant_link(victim, s.rucio)
      local dry = tp.logout(opts { all = true, dry_run = true })
      local report = tp.logout(opts { all = true })
      local expected = { "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root false symlink" }
      assert.are.same(expected, actions(dry, s.dir))
      assert.are.same(expected, actions(report, s.dir))
      assert.is_false(report.ok)
      assert.are.equal(NATIVE, read(victim .. "/auth_token_for_account_root"))
      assert.are.equal(tostring(NOW + 3600), read(victim .. "/auth_token_exp_for_account_root"))
      assert.are.equal("keep me", read(victim .. "/precious"))
    end)

    it_root("reports and leaves a token file of another uid, and the directory holding it", function()
      local path = rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
      sh("chown 54321 '" .. path .. "'")
      local report = tp.logout(opts())
      assert.are.same({
        "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root false not_owner",
        "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_exp_for_account_root true nil",
      }, actions(report, s.dir))
      assert.are.equal(("not_owner: remove_token: %s belongs to uid 54321, not uid %d; left in place"):format(
        path, UID), report.actions[1].message)
      assert.are.equal(NATIVE, read(path))
      assert.is_false(report.ok)
    end)

    it_root("removes BEARER_TOKEN_FILE when it is the user's, and leaves it when it is another uid's", function()
      local file = s.dir .. "/bearer"
      write(file, jwt { sub = "erin", exp = NOW + 60 })
      s.env.BEARER_TOKEN_FILE = file
      sh("chown 54321 '" .. file .. "'")
      local report = tp.logout(opts { scheme = "wlcg" })
      assert.are.same({ "remove ~/bearer false not_owner" }, actions(report, s.dir))
      assert.is_true(exists(file))
      sh("chown " .. UID .. " '" .. file .. "'")
      assert.are.same({ "remove ~/bearer true nil" }, actions(tp.logout(opts { scheme = "wlcg" }), s.dir))
      assert.is_false(exists(file))
    end)

    it("removes a FIFO of the user's at bt_u<uid> without opening it", function()
      sh("mkfifo '" .. s.bt .. "'")
      local report = tp.logout(opts { scheme = "wlcg" })
      assert.are.same({ "remove ~/run/bt_u" .. UID .. " true nil" }, actions(report, s.dir))
      assert.is_false(exists(s.bt))
    end)
  end)

  it("raises for misuse", function()
    assert.has_error(function() tp.logout { revok = true } end, "bad argument #1 to 'logout' (unknown option 'revok')")
    assert.has_error(function() tp.logout { denylist = 1 } end,
      "bad argument #1 to 'logout' (option 'denylist' must be a path or a tokenpolicy.Denylist (tp.denylist(path)))")
  end)
end)

describe("session.logout with revoke, against real peers", function()
  local s, p
  setup(function() p = oidc.start() end)
  teardown(function() if p then oidc.stop(p) end end)
  before_each(function() s = sandbox() end)
  after_each(function() expect.remove_dir(s.dir) end)

  local function client(extra)
    local o = { env = s.env, uid = UID, revoke = true, client_id = oidc.client_id, client_secret = oidc.client_secret }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("revokes an opaque token at its issuer (RFC 7009), then removes the file", function()
    local token = oidc.client_credentials(p)
    write(s.bt, token .. "\n")
    local report = tp.logout(client { scheme = "wlcg", issuer = p.issuer })
    assert.are.same({
      "revoke " .. p.revocation_endpoint .. " true nil",
      "remove ~/run/bt_u" .. UID .. " true nil",
    }, actions(report, s.dir))
    assert.is_true(report.ok)
    local info = assert(tp.introspect { endpoint = p.introspection_endpoint, token = token,
                                        client_id = oidc.client_id, client_secret = oidc.client_secret })
    assert.is_false(info.active)
    assert.is_nil(tostring(report):find(token, 1, true))
  end)

  it("takes the client credentials from the environment it is given", function()
    local token = oidc.client_credentials(p)
    write(s.bt, token)
    s.env.TOKENPOLICY_CLIENT_ID, s.env.TOKENPOLICY_CLIENT_SECRET = oidc.client_id, oidc.client_secret
    s.env.TOKENPOLICY_ISSUER = p.issuer
    local report = tp.logout { env = s.env, uid = UID, revoke = true, scheme = "wlcg" }
    assert.is_true(report.ok, tostring(report))
    assert.is_false(assert(tp.introspect { endpoint = p.introspection_endpoint, token = token,
      client_id = oidc.client_id, client_secret = oidc.client_secret }).active)
  end)

  it("adds a JWT access token's jti to the denylist, or reports it not_revocable without one", function()
    local token = oidc.client_credentials(p, { resource = "https://rucio.example.org", scope = "storage.read:/" })
    local claims = assert(tp.decode(token)).claims
    write(s.bt, token)
    local report = tp.logout(client { scheme = "wlcg", dry_run = true })
    assert.are.same({ "denylist jti " .. claims.jti .. " false not_revocable",
                      "remove ~/run/bt_u" .. UID .. " true nil" }, actions(report, s.dir))
    report = tp.logout(client { scheme = "wlcg", dry_run = true, denylist = s.dir .. "/deny" })
    assert.are.same({ "denylist jti " .. claims.jti .. " true nil",
                      "remove ~/run/bt_u" .. UID .. " true nil" }, actions(report, s.dir))
    assert.are.equal("would add it to " .. s.dir .. "/deny", report.actions[1].message)
    assert.is_false(exists(s.dir .. "/deny"))
    local deny = assert(tp.denylist(s.dir .. "/deny"))
    report = tp.logout(client { scheme = "wlcg", denylist = deny })
    assert.are.same({ "denylist jti " .. claims.jti .. " true nil",
                      "remove ~/run/bt_u" .. UID .. " true nil" }, actions(report, s.dir))
    assert.is_true(report.ok)
    assert.is_true(deny:contains(claims.jti, claims.exp - 1))
    assert.is_false(exists(s.bt))
  end)

  it("still removes the files when the issuer is unreachable, and says so", function()
    local gone = oidc.start()
    oidc.stop(gone)
    local token = oidc.client_credentials(p)
    write(s.bt, token)
    local report = tp.logout(client { scheme = "wlcg", issuer = gone.issuer, timeout = 5 })
    assert.are.same({ "revoke " .. gone.issuer .. " false unreachable",
                      "remove ~/run/bt_u" .. UID .. " true nil" }, actions(report, s.dir))
    assert.is_false(report.ok)
    assert.is_false(exists(s.bt))
    assert.is_truthy(tostring(report):find("\nnot everything could be ended: see above$"))
  end)

  it("calls Arvados' logout, then removes the token line", function()
    local peer = http_peer.start()
    local ok, err = pcall(function()
      write(s.settings, "ARVADOS_API_HOST=127.0.0.1:" .. peer.port .. "\nARVADOS_API_TOKEN=" .. ARV .. "\n")
      local report = tp.logout { env = s.env, uid = UID, revoke = true, scheme = "arvados", arvados_scheme = "http" }
      assert.are.same({ "revoke http://127.0.0.1:" .. peer.port .. "/logout true nil",
                        "remove ~/home/.config/arvados/settings.conf (ARVADOS_API_TOKEN) true nil" },
        actions(report, s.dir))
      local log = assert(read(peer.log))
      local request = tp.json_decode(log:match("^[^\n]+"))
      assert.are.equal("GET", request.method)
      assert.are.equal("/logout?api_token=" .. ARV:gsub("/", "%%2F"), request.path)
      assert.are.equal("ARVADOS_API_HOST=127.0.0.1:" .. peer.port .. "\n", read(s.settings))
    end)
    http_peer.stop(peer)
    assert(ok, err)
  end)

  it("reports a native Rucio token as not revocable, and removes it", function()
    rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    local report = tp.logout(client { now = NOW })
    assert.are.same({
      "revoke Rucio token of root false not_revocable",
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_exp_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe true nil",
    }, actions(report, s.dir))
  end)
end)

describe("session.switch_account", function()
  local s
  before_each(function() s = sandbox() end)
  after_each(function() expect.remove_dir(s.dir) end)

  it("gives the export line and the new account's token status", function()
    rucio_token(s, ".rucio_jdoe", "alice", NATIVE:gsub("^root", "alice"), NOW + 3600)
    local r = tp.switch_account { account = "alice", env = s.env, uid = UID, now = NOW }
    assert.are.equal("export RUCIO_ACCOUNT=alice", r.export)
    assert.are.equal("valid until " .. os.date("!%Y-%m-%d %H:%M:%S UTC", NOW + 3600), r.message)
    assert.are.equal("root", r.previous)
    assert.are.equal(s.rucio .. "/auth_token_for_account_alice", r.status.path)
    assert.are.same({}, r.warnings)
    assert.are.same({}, r.actions)
    assert.are.equal(r.export .. "\n" .. r.message, tostring(r))
  end)

  it("says how to log in when the account has no token, and quotes values for the shell", function()
    local r = tp.switch_account { account = "bob's", vo = "atlas", env = s.env, uid = UID, now = NOW }
    assert.are.equal([[export RUCIO_ACCOUNT='bob'\''s'; export RUCIO_VO=atlas]], r.export)
    assert.are.equal("no token for bob's: run rucio whoami to log in", r.message)
    assert.is_nil(r.status)
    rucio_token(s, ".rucio_jdoe@atlas", "bob", NATIVE:gsub("^root", "bob"), NOW - 5)
    r = tp.switch_account { account = "bob", vo = "atlas", env = s.env, uid = UID, now = NOW }
    assert.are.equal("the token expired at " .. os.date("!%Y-%m-%d %H:%M:%S UTC", NOW - 5)
      .. ": run rucio whoami to log in again", r.message)
  end)

  it("logs the previous account out with logout_previous", function()
    local root = rucio_token(s, ".rucio_jdoe", "root", NATIVE, NOW + 3600)
    local r = tp.switch_account { account = "alice", logout_previous = true, env = s.env, uid = UID, now = NOW }
    assert.are.same({
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe/auth_token_exp_for_account_root true nil",
      "remove ~/tmp/jdoe/.rucio_jdoe true nil",
    }, actions(r, s.dir))
    assert.is_false(exists(root))
  end)

  it("warns that auth_token_file_path is one file for every account, and removes it with logout_previous", function()
    local shared = s.dir .. "/token"
    write(s.cfg, "[client]\naccount = root\nauth_token_file_path = " .. shared .. "\n", "644")
    assert(tp.write_token(shared, NATIVE))
    local r = tp.switch_account { account = "alice", env = s.env, uid = UID, now = NOW }
    assert.are.same({ ("[client] auth_token_file_path makes %s the token file of every account: it holds the "
      .. "token of whichever account logged in last (root), so Rucio would authenticate as that account; switch "
      .. "with logout_previous to remove it"):format(shared) }, r.warnings)
    assert.are.equal("no token of its own for alice: the shared file holds the last login's token; switch with "
      .. "logout_previous, then run rucio whoami", r.message)
    r = tp.switch_account { account = "alice", logout_previous = true, env = s.env, uid = UID, now = NOW }
    assert.are.same({ "remove ~/token true nil" }, actions(r, s.dir))
    assert.is_false(exists(shared))
    assert.are.equal("no token for alice: run rucio whoami to log in", r.message)
  end)

  it("persists the account and VO in rucio.cfg, keeping every other line, comment and the mode", function()
    write(s.cfg, "# site config\n[common]\naccount = not-this\n\n[client]\n; who I am\nAccount = root\n"
      .. "  continued\nauth_type = userpass\n\n[policy]\nx = 1\n", "640")
    local r = tp.switch_account { account = "alice", vo = "atlas", persist = true, env = s.env, uid = UID,
                                  now = NOW }
    assert.are.same({ "persist ~/rucio.cfg true nil" }, actions(r, s.dir))
    assert.are.equal("# site config\n[common]\naccount = not-this\n\n[client]\n; who I am\naccount = alice\n"
      .. "auth_type = userpass\nvo = atlas\n\n[policy]\nx = 1\n", read(s.cfg))
    assert.are.equal(tonumber("640", 8), tp.stat(s.cfg).mode & 4095)
    -- Rucio now reads the new account from the file
    assert.are.equal("alice", tp.discover({ scheme = "rucio", env = s.env, uid = UID })[1].account)
    write(s.cfg, "# nothing else\n", "600")
    tp.switch_account { account = "bob", persist = true, env = s.env, uid = UID, now = NOW }
    assert.are.equal("# nothing else\n\n[client]\naccount = bob\n", read(s.cfg))
    assert.are.equal(tonumber("600", 8), tp.stat(s.cfg).mode & 4095)
  end)

  it("does not rewrite a rucio.cfg that is a symbolic link", function()
    local real = s.dir .. "/real.cfg"
    write(real, "[client]\naccount = root\n", "644")
    os.remove(s.cfg)
    sh(("ln -s '%s' '%s'"):format(real, s.cfg))
    local r = tp.switch_account { account = "alice", persist = true, env = s.env, uid = UID, now = NOW }
    assert.are.same({ "persist ~/rucio.cfg false symlink" }, actions(r, s.dir))
    assert.are.equal("[client]\naccount = root\n", read(real))
  end)

  it("raises for misuse", function()
    assert.has_error(function() tp.switch_account {} end,
      "bad argument #1 to 'switch_account' (option 'account' is required)")
    assert.has_error(function() tp.switch_account { account = "a\nb" } end,
      "bad argument #1 to 'switch_account' (option 'account' must not hold control characters)")
  end)
end)

describe("the core primitives behind the workflows", function()
  local dir
  before_each(function() dir = expect.new_dir() end)
  after_each(function() expect.remove_dir(dir) end)

  it("list_dir lists names sorted, refuses a link and a FIFO at once", function()
    sh(("mkdir '%s/d' && touch '%s/d/b' '%s/d/a' && mkdir '%s/d/c' && mkfifo '%s/f'"):format(dir, dir, dir, dir, dir))
    plant_link(dir .. "/d", dir .. "/link")
    assert.are.same({ "a", "b", "c" }, tp.list_dir(dir .. "/d"))
    assert.are.same({ "a", "b", "c" }, tp.list_dir(dir .. "/d/"))
    assert.are.equal(("symlink: list_dir: %s/link is a symbolic link; it was not followed"):format(dir),
      expect.fails("symlink", tp.list_dir(dir .. "/link")))
    assert.are.equal(("io: list_dir: %s/f is a FIFO (named pipe), not a directory"):format(dir),
      expect.fails("io", tp.list_dir(dir .. "/f")))
    expect.fails("not_found", tp.list_dir(dir .. "/none"))
    assert.has_error(function() tp.list_dir(dir, { uid = 1 }) end,
      "bad argument #2 to 'list_dir' (unknown option 'uid')")
  end)

  it("rewrite_config replaces a file atomically, keeping its mode, and refuses links and others' files", function()
    local path = dir .. "/rucio.cfg"
    write(path, "old\n", "640")
    local ino = tp.stat(path).ino
    assert.is_true(tp.rewrite_config(path, "new\n"))
    assert.are.equal("new\n", read(path))
    assert.are.equal(tonumber("640", 8), tp.stat(path).mode & 4095)
    assert.are_not.equal(ino, tp.stat(path).ino)
    assert.are.same({ "rucio.cfg" }, tp.list_dir(dir)) -- no temporary left
    sh(("ln -s '%s' '%s/link'"):format(path, dir))
    expect.fails("symlink", tp.rewrite_config(dir .. "/link", "x"))
    assert.are.equal("new\n", read(path))
    expect.fails("not_found", tp.rewrite_config(dir .. "/none", "x"))
    sh("mkfifo '" .. dir .. "/fifo'")
    expect.fails("io", tp.rewrite_config(dir .. "/fifo", "x"))
  end)

  it_root("rewrite_config refuses another uid's file, and rewrites it for that uid, keeping the owner", function()
    local path = dir .. "/rucio.cfg"
    write(path, "old\n", "644")
    sh("chown 54321 '" .. path .. "'")
    assert.are.equal(("not_owner: rewrite_config: %s belongs to uid 54321, not uid %d"):format(path, UID),
      expect.fails("not_owner", tp.rewrite_config(path, "x")))
    assert.is_true(tp.rewrite_config(path, "", { uid = 54321 }))
    assert.are.equal(54321, tp.stat(path).uid)
    assert.are.equal("", read(path))
  end)
end)
