-- tokenpolicy in the REPL (`lua5.4`, then `tp = require "tokenpolicy"`):
-- every name is a plain field that `pairs` and completion see, `tp.help()`
-- lists them and `tp.help "verify"` gives one line, and every object and
-- result the library returns prints something a person can read, never
-- "table: 0x...".  Which kinds exist is found, not listed: every class the
-- C core registers and every class the Lua modules define must be among
-- the kinds printed here.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"
local expect = require "helpers.expect"
local peer = require "helpers.http_peer"

after_each(function() collectgarbage() end)

local NOW = 1800000000 -- 2027-01-15 08:00:00 UTC
local MAC_JWK = crypto.hmac_jwk(("m"):rep(32), "mac-1")
local SHORT_JWK = '{"kty":"oct","kid":"short","k":"' .. tp.b64url_encode("short") .. '"}'
local ARV_TOKEN = "v2/zzzzz-gj3su-0123456789abcde/s3cretArvadosTokenValue"
local memory = require "tokenpolicy.store.memory"
local files_store = require "tokenpolicy.store.files"
local ini = require "tokenpolicy.ini"
local haproxy = require "tokenpolicy.haproxy"
local ONE_HOUR = tp.policy { max_token_lifetime = "1h" }
local ALICE = { username = "alice", email = "alice@example.org", uuid = "zzzzz-tpzed-000000000000001" }

-- A token record of the memory store, alice's.
local function record(id, expires_at)
  return { id = id, user_id = 1, owner_uuid = ALICE.uuid, expires_at = expires_at or tp.null, user = ALICE }
end

-- Whether s has the whole format: `fmt` literally, except that each "<*>"
-- stands for any text (the parts that depend on the clock or the machine).
local function has_format(fmt, s)
  local pattern = fmt:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("<%%%*>", ".-")
  return s:match("^" .. pattern .. "$") ~= nil
end

-- The classes the Lua modules define, found among the upvalues of their
-- functions (recursively, within lua/tokenpolicy): each table with a
-- __tostring or that is its own __index, as { [metatable] = "module name" }.
local function lua_classes()
  local found, seen = {}, {}
  local function module_of(fn)
    local path = debug.getinfo(fn, "S").source:match("^@.-lua/(tokenpolicy/.+)%.lua$")
    return path and (path:gsub("/init$", ""):gsub("/", "."))
  end
  local function visit(value, name, module)
    if seen[value] then return end
    if type(value) == "function" then
      local own = module_of(value)
      if not own then return end
      seen[value] = true
      for i = 1, math.huge do
        local up_name, up = debug.getupvalue(value, i)
        if up_name == nil then break end
        visit(up, up_name, own)
      end
    elseif type(value) == "table" and (rawget(value, "__tostring") or rawget(value, "__index") == value) then
      seen[value] = true
      found[value] = module .. " " .. name
      for _, v in pairs(value) do visit(v, name, module) end
    end
  end
  local pipe = assert(io.popen("cd lua && find tokenpolicy -name '*.lua'", "r"))
  for path in pipe:lines() do
    local module = require((path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")))
    if type(module) == "table" then
      for _, v in pairs(module) do visit(v) end
    end
  end
  pipe:close()
  return found
end

-- The core's classes that are never returned: the to-be-closed boxes that
-- hold a call's descriptors, buffers and handles while it runs.
local INTERNAL = { ["tokenpolicy.FileWork"] = true, ["tokenpolicy.DenylistWork"] = true,
                   ["tokenpolicy.HttpCall"] = true, ["tokenpolicy.Box"] = true }

describe("tp in the REPL", function()
  it("has every name as a plain field: no metatable makes names up", function()
    assert.is_nil(getmetatable(tp))
    local count = 0
    for name, value in pairs(tp) do
      count = count + 1
      assert.are.equal(value, rawget(tp, name))
    end
    assert.is_true(count > #tp._help_names())
    -- the Lua workflows are there before their first use, as themselves
    for _, name in ipairs { "discover", "classify", "status", "logout", "switch_account", "check_long_lived",
                            "fix_long_lived", "policy_from_arvados", "rucio_config" } do
      assert.is_function(rawget(tp, name), name)
    end
    assert.are.equal(require("tokenpolicy.session").status, tp.status)
  end)

  it("lists every public name in tp.help(), and every name it lists is in tp", function()
    local text = tp.help()
    local listed = {}
    for name in text:gmatch("\n  (%S+)") do
      listed[name] = true
      assert.is_not_nil(rawget(tp, name), name)
    end
    for name in pairs(tp) do
      if name:sub(1, 1) ~= "_" then
        assert.is_true(listed[name], name .. " is missing from tp.help()")
      end
    end
    assert.is_truthy(text:match("^tokenpolicy %d+%.%d+[%w.%-]* %(docs/api%.md has every option and error code%)\n"))
  end)

  it("gives one function's line with tp.help(name)", function()
    assert.are.equal("tokenpolicy.verify(token, keys, opts) -> claims, header: signature, then iss/aud/exp/... "
      .. "checks\n(docs/api.md has every option and error code)", tp.help "verify")
    for name in pairs(tp) do
      if name:sub(1, 1) ~= "_" then
        assert.are.equal("tokenpolicy." .. name, tp.help(name):match("^tokenpolicy%.[%w_]+"), name)
      end
    end
  end)
end)

describe("what tostring shows", function()
  local dir, p, f = nil, nil, {}

  lazy_setup(function()
    dir = expect.new_dir()
    p = peer.start()
    f.set = assert(tp.keys(MAC_JWK))
    f.mixed = assert(tp.keys('{"keys":[' .. MAC_JWK .. "," .. SHORT_JWK .. "]}"))
    f.claims = { iss = "https://idp.example", sub = "alice", aud = "rucio", iat = NOW - 10, exp = NOW + 3600,
                 jti = "j1" }
    f.token = assert(tp.sign(f.claims, f.set, { alg = "HS256" }))
    f.policy = assert(tp.policy { max_token_lifetime = "24h", login_token_lifetime = "12h", idle_timeout = "5m" })
    f.verifier = assert(tp.verifier { keys = f.set, algs = { "HS256" }, policy = f.policy, cache = 10 })
    assert(tp.write_token(dir .. "/tok", f.token))
    expect.write_file(dir .. "/open", "x")
    os.execute("chmod 0644 " .. expect.quote(dir .. "/open"))
    os.execute("mkdir -m 0700 " .. expect.quote(dir .. "/tree") .. " && printf x > " .. expect.quote(dir .. "/tree/a"))
    expect.write_file(dir .. "/keys.jwks", '{"keys":[' .. MAC_JWK .. "]}")
    os.execute("mkdir -m 0700 " .. expect.quote(dir .. "/esc"))
    expect.write_file(dir .. "/esc/a\27[31mb", "x")
  end)

  lazy_teardown(function()
    peer.stop(p)
    expect.remove_dir(dir)
  end)

  local uid = tp.euid()
  local me = tp.user()

  -- Each kind: what makes it, and the whole string it prints.
  local KINDS = {
    { "KeySet", function() return f.set end, "tokenpolicy.KeySet: 1 key (oct 256 bits kid=mac-1 private)" },
    { "KeySet:kids()", function() return f.mixed:kids() end, "tokenpolicy.KeyIds: mac-1" },
    { "KeySet:list()", function() return f.set:list() end, "oct 256 kid=mac-1 private: HS256" },
    { "a KeySet:list() entry", function() return f.set:list()[1] end, "oct 256 kid=mac-1 private: HS256" },
    { "KeySet:skipped()", function() return f.mixed:skipped() end,
      "#2 kid=short: oct key of 40 bits fits no allowed algorithm" },
    { "a KeySet:skipped() entry", function() return f.mixed:skipped()[1] end,
      "#2 kid=short: oct key of 40 bits fits no allowed algorithm" },
    { "decode's JWT", function() return tp.decode(f.token) end,
      "JWT HS256, kid mac-1, typ JWT\n  iss    https://idp.example\n  sub    alice\n  aud    rucio\n"
      .. "  jti    j1\n  iat    2027-01-15 07:59:50 UTC (<*>)\n  exp    2027-01-15 09:00:00 UTC (<*>)" },
    { "verify's claims", function() return (tp.verify(f.token, f.set, { algs = { "HS256" }, now = NOW })) end,
      "iss    https://idp.example\nsub    alice\naud    rucio\njti    j1\n"
      .. "iat    2027-01-15 07:59:50 UTC (<*>)\nexp    2027-01-15 09:00:00 UTC (<*>)" },
    { "verify's header", function() return select(2, tp.verify(f.token, f.set, { algs = { "HS256" }, now = NOW })) end,
      "alg    HS256\nkid    mac-1\ntyp    JWT" },
    { "Verifier", function() return f.verifier end, "tokenpolicy.Verifier (KeySet, policy, cache 10)" },
    { "Verifier:check()'s claims view", function() return (f.verifier:check(f.token, NOW)) end,
      "iss    https://idp.example\nsub    alice\naud    rucio\njti    j1\n"
      .. "iat    2027-01-15 07:59:50 UTC (<*>)\nexp    2027-01-15 09:00:00 UTC (<*>)" },
    { "Verifier:stats()", function() return f.verifier:stats() end, "hits <*>, misses <*>, entries <*>, evictions 0" },
    { "Policy", function() return f.policy end,
      "tokenpolicy.Policy (compat docs): max_token_lifetime 1d, login_token_lifetime 12h, idle_timeout 5m, "
      .. "issue_trusted_tokens true, refresh_before_exp 20m" },
    { "Policy:settings()", function() return f.policy:settings() end,
      "tokenpolicy.PolicySettings (compat docs): max_token_lifetime 1d, login_token_lifetime 12h, "
      .. "idle_timeout 5m, issue_trusted_tokens true, refresh_before_exp 20m" },
    { "Policy:evaluate()'s verdict", function()
        return f.policy:evaluate({ expires_at = NOW + 100, created_at = NOW - 10 }, NOW)
      end,
      "tokenpolicy.Verdict: valid, expires 2027-01-15 08:01:40 UTC (1m40s left), refresh due\n"
      .. "  - expires in 1m40s, within the 20m refresh window: refresh it now" },
    { "policy_from_arvados's warnings", function()
        return select(2, tp.policy_from_arvados { Clusters = { zzzzz = { API = { MaxTokenLifetime = "-1h" } } } })
      end, "Clusters.zzzzz.API.MaxTokenLifetime: -1h is negative: off, as in Arvados' server<*>" },
    { "no policy_from_arvados warnings", function()
        return select(2, tp.policy_from_arvados { Clusters = { zzzzz = { API = { MaxTokenLifetime = "24h" } } } })
      end, "no warnings" },
    { "Denylist", function()
        local d = assert(tp.denylist(dir .. "/deny"))
        assert(d:add("j1", NOW + 10))
        return d
      end, "tokenpolicy.Denylist <dir>/deny (1 entry)" },
    { "JwksSource", function() return tp.jwks {} end, "tokenpolicy.JwksSource: fed with set_keys, no keys yet" },
    { "JwksSource:stats()", function() return tp.jwks {}:stats() end,
      "tokenpolicy.JwksStats: fetches 0, fed 0, no keys yet, failed false" },
    { "JwksSource:stats() once fed", function()
        local source = tp.jwks {}
        assert(source:set_keys('{"keys":[' .. MAC_JWK .. "]}"))
        return source:stats()
      end, "tokenpolicy.JwksStats: fetches 0, fed 1, keys of <*> UTC, failed false" },
    { "read_token's info", function() return select(2, tp.read_token(dir .. "/tok")) end,
      "tokenpolicy.TokenFileInfo: mode 0600, uid <uid>, <size> bytes, modified <*> UTC" },
    { "stat", function() return tp.stat(dir .. "/tok") end,
      "tokenpolicy.FileStatus: file, mode 0600, uid <uid>, gid <*>, <size> bytes, modified <*> UTC" },
    { "user", function() return tp.user() end, "tokenpolicy.User: <name> (uid <uid>), home <home>" },
    { "groups", function() return tp.groups() end, "tokenpolicy.GroupIds: <*>" },
    { "list_dir", function() return tp.list_dir(dir .. "/tree") end, "tokenpolicy.DirNames: 1 name: a" },
    -- a name someone else chose reaches no terminal as an escape sequence
    { "list_dir of a hostile name", function() return tp.list_dir(dir .. "/esc") end,
      "tokenpolicy.DirNames: 1 name: a?[31mb" },
    { "audit with no findings", function() return tp.audit(dir .. "/tok") end, "no findings" },
    { "audit's findings", function() return tp.audit(dir .. "/open") end, "<*>0644<*>" },
    { "an audit finding", function() return tp.audit(dir .. "/open")[1] end, "<*>0644<*>" },
    { "remove_tree", function() return tp.remove_tree(dir .. "/tree") end,
      "tokenpolicy.Removal: 2 removed, 0 skipped\n  removed <dir>/tree/a\n  removed <dir>/tree" },
    { "oidc_metadata", function() return tp.oidc_metadata(p.base .. "/issuer", { ttl = 0 }) end,
      "OIDC metadata for <base>/issuer: jwks_uri <base>/jwks, revocation endpoint <base>/revoke, "
      .. "introspection endpoint <base>/introspect" },
    { "introspect", function()
        return tp.introspect { endpoint = p.base .. "/introspect", token = "active-token-abc123" }
      end, "introspection: active, sub alice, client_id cli, scope read write, expires 2030-03-17 17:46:40 UTC" },
    { "arvados_current", function()
        return tp.arvados_current { host = "127.0.0.1:" .. p.port, token = ARV_TOKEN, scheme = "http" }
      end, "tokenpolicy.ArvadosToken: uuid zzzzz-gj3su-0123456789abcde, owner zzzzz-tpzed-0123456789abcde, "
      .. "expires never" },
    { "tokenpolicy.null", function() return tp.null end, "tokenpolicy.null" },
    { "classify", function() return tp.classify(f.token) end,
      'tokenpolicy.Classification: jwt (alg "HS256", kid "mac-1", iss "https://idp.example", sub "alice", '
      .. "exp 2027-01-15 09:00:00 UTC, decoded)" },
    { "discover", function() return tp.discover { env = { HOME = dir, USER = "alice", TMPDIR = dir,
        BEARER_TOKEN_FILE = dir .. "/tok" }, scheme = "wlcg" } end,
      "scheme  account  source   path<*>exists   active  problem\n"
      .. "wlcg    -        env      <dir>/tok  <*>exists   active\n"
      .. "wlcg    -        default  /tmp/bt_u<uid><*>" },
    { "a discover candidate", function() return tp.discover { env = { HOME = dir, USER = "alice", TMPDIR = dir,
        BEARER_TOKEN_FILE = dir .. "/tok" }, scheme = "wlcg" }[1] end,
      "wlcg  -  env  <dir>/tok  exists  active" },
    { "status", function() return tp.status { env = { HOME = dir, USER = "alice", TMPDIR = dir,
        BEARER_TOKEN_FILE = dir .. "/tok" }, scheme = "wlcg", now = NOW } end, "<*>wlcg<*><dir>/tok<*>" },
    { "a status entry", function() return tp.status { env = { HOME = dir, USER = "alice", TMPDIR = dir,
        BEARER_TOKEN_FILE = dir .. "/tok" }, scheme = "wlcg", now = NOW }[1] end, "<*>wlcg<*><dir>/tok<*>" },
    { "logout", function() return tp.logout { env = { HOME = dir, USER = "alice", TMPDIR = dir,
        BEARER_TOKEN_FILE = dir .. "/tok" }, scheme = "wlcg", dry_run = true, now = NOW } end,
      "<*>would<*><dir>/tok<*>" },
    { "switch_account", function() return tp.switch_account { account = "bob", env = { HOME = dir, USER = "alice",
        TMPDIR = dir, RUCIO_CONFIG = dir .. "/none.cfg" }, now = NOW } end, "export RUCIO_ACCOUNT=bob<*>" },
    { "a memory store", function() return memory { record(1, nil) } end, "tokenpolicy.store.memory (1 record)" },
    { "check_long_lived's result", function()
        return tp.check_long_lived(memory { record(1, nil), record(2, NOW + 600) }, ONE_HOUR, { now = NOW })
      end, "Found 1 long-lived tokens from users:\nalice,alice@example.org,zzzzz-tpzed-000000000000001" },
    { "fix_long_lived's result", function()
        return tp.fix_long_lived(memory { record(1, nil) }, ONE_HOUR, { now = NOW })
      end, "Setting token expiration to: 2027-01-15 09:00:00 +0000\n1 tokens updated." },
    { "a token files store", function() return files_store { root = dir } end,
      "tokenpolicy.store.files (<dir>)" },
    { "a token files store's check", function()
        return files_store { root = dir }:check { policy = ONE_HOUR, now = NOW }
      end, "0 long-lived token files" },
    { "a token files store's fix", function()
        return files_store { root = dir }:fix({ policy = ONE_HOUR, now = NOW }, { dry_run = true })
      end, "0 token files would be removed" },
    { "an INI configuration", function() return ini.parse("[client]\naccount = bob\n", "rucio.cfg") end,
      "tokenpolicy.IniConfig: 1 section" },
    { "the HAProxy gateway", function()
        local log = { Info = function() end, Warning = function() end }
        return haproxy.gateway(haproxy.check_options { keys_file = dir .. "/keys.jwks", algs = "HS256" }, log)
      end, "tokenpolicy.haproxy.Gateway tokenpolicy-auth: keys_file <dir>/keys.jwks, 0 problems" },
  }

  local covered = {}
  for _, kind in ipairs(KINDS) do
    local what, make, format = kind[1], kind[2], kind[3]
    it("prints " .. what, function()
      local value = make()
      assert.is_truthy(type(value) == "table" or type(value) == "userdata", what .. ": " .. tostring(value))
      local text = tostring(value)
      local fmt = format:gsub("<dir>", dir):gsub("<base>", p.base):gsub("<uid>", tostring(uid))
        :gsub("<name>", me.name):gsub("<home>", me.home)
        :gsub("<size>", tostring(#f.token))
      assert.is_true(has_format(fmt, text), ("%s printed:\n%s\nnot:\n%s"):format(what, text, fmt))
      covered[getmetatable(value)] = what
    end)
  end

  -- (after the kinds above: busted runs a block's specs in order)
  it("has printed every class the core registers, except its internal boxes", function()
    local missing = {}
    for name, meta in pairs(debug.getregistry()) do
      if type(name) == "string" and name:match("^tokenpolicy%.") and type(meta) == "table"
          and rawget(meta, "__name") == name then
        if INTERNAL[name] then
          assert.is_nil(rawget(meta, "__tostring"), name)
          assert.is_function(rawget(meta, "__gc") or rawget(meta, "__close"), name)
        elseif not covered[meta] then
          missing[#missing + 1] = name
        end
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  -- Two classes print here through their metatable: a PostgreSQL store
  -- needs a server (spec 30 starts one), and the command line's exit is
  -- an error value its main catches.
  local BY_METATABLE = {
    ["tokenpolicy.store.arvados_pg Store"] = { { where = "arvados@db.example" },
      "tokenpolicy.store.arvados_pg (arvados@db.example, closed)" },
    ["tokenpolicy.cli Exit"] = { { code = 2, line = "no such command" }, "tokenpolicy: exit 2: no such command" },
  }

  it("has printed every class the Lua modules define", function()
    local missing, found, count = {}, {}, 0
    for meta, name in pairs(lua_classes()) do
      count = count + 1
      local example = BY_METATABLE[name]
      if example then
        found[name] = true
        assert.are.equal(example[2], tostring(setmetatable(example[1], meta)))
      elseif not covered[meta] then
        missing[#missing + 1] = name
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
    assert.is_true(count >= 15, count .. " classes found")
    for name in pairs(BY_METATABLE) do
      assert.is_true(found[name], name)
    end
  end)
end)
