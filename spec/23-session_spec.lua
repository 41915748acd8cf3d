-- tokenpolicy.session: status, logout and switch_account over a sandbox
-- holding Rucio (several accounts and VOs, a legacy layout), WLCG and
-- Arvados tokens, with an explicit environment; real peers for revocation.
local tp = require "tokenpolicy"
local session = require "tokenpolicy.session"
local expect = require "helpers.expect"

local NOW = 1800000000
local UID = tp.euid()
local NATIVE = "root-/DC=ch/CN=Joe Doe-unknown-0123456789abcdef0123456789abcdef"
local ARV = "v2/zzzzz-gj3su-0123456789abcde/3kg6k6lzmp9kj5cpkcox0s5x8r1u4j7w2q"

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

  it("reports a FIFO at bt_u<uid> without hanging, and a token file of another uid", function()
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
    sh(("mkdir -p '%s/jdoe' && ln -s '%s' '%s' && chown -h 54321 '%s'"):format(s.tmp, victim, s.rucio, s.rucio))
    local list = tp.status { env = s.env, uid = UID, now = NOW, scheme = "rucio" }
    assert.are.equal(1, #list)
    assert.are.same({ "symlink" }, list[1].findings)
    assert.is_nil(list[1].kind)
    assert.is_nil(list[1].exp)
  end)

  it("raises for misuse", function()
    assert.has_error(function() tp.status { nope = 1 } end, "bad argument #1 to 'status' (unknown option 'nope')")
    assert.has_error(function() tp.status { scheme = "x" } end,
      "bad argument #1 to 'status' (option 'scheme' must be one of rucio, wlcg, arvados)")
    assert.has_error(function() tp.status { policy = {} } end,
      "bad argument #1 to 'status' (option 'policy' must be a tokenpolicy.Policy (tp.policy{...}))")
  end)
end)
