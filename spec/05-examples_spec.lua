-- Every script in examples/ runs, under the Lua that runs the specs, and
-- prints exactly what its header comment promises. The examples that need
-- a peer get a real one from spec/helpers (oidc-provider, PostgreSQL,
-- HAProxy), started here; the example is given its address.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local quote = expect.quote

-- The interpreter of the Lua version running the specs (lua5.4, lua5.3).
local interpreter = "lua" .. _VERSION:match("%d+%.%d+")

-- Under `make asan` the examples inherit the sanitizer preload (their core
-- is instrumented), and so would the mktemp they run, whose own leaks at
-- exit are not what that run checks: it gets a mktemp without the preload.
local wrappers
local function path_for_examples()
  if (os.getenv("LD_PRELOAD") or "") == "" then
    return os.getenv("PATH")
  end
  if not wrappers then
    wrappers = expect.new_dir()
    expect.write_file(wrappers .. "/mktemp", '#!/bin/sh\nexec env -u LD_PRELOAD /usr/bin/mktemp "$@"\n')
    assert(os.execute("chmod 755 " .. quote(wrappers .. "/mktemp")))
  end
  return wrappers .. ":" .. os.getenv("PATH")
end
teardown(function()
  if wrappers then expect.remove_dir(wrappers) end
end)

-- Runs an example with arguments (and `env`, more variables for it) under
-- this Lua and its build; returns the exit status, stdout and stderr.
local function run(script, args, env)
  local err = os.tmpname()
  local words = { "LUA_PATH=" .. quote(package.path), "LUA_CPATH=" .. quote(package.cpath),
                  "PATH=" .. quote(path_for_examples()) }
  for name, value in pairs(env or {}) do
    words[#words + 1] = name .. "=" .. quote(value)
  end
  words[#words + 1] = interpreter
  words[#words + 1] = script
  for _, a in ipairs(args or {}) do
    words[#words + 1] = quote(a)
  end
  local pipe = assert(io.popen("env " .. table.concat(words, " ") .. " 2>" .. quote(err)))
  local out = pipe:read("a")
  local _, _, status = pipe:close()
  local errors = expect.read_file(err, true)
  os.remove(err)
  return status, out, errors
end

after_each(function() collectgarbage() end)

describe("examples/", function()
  local names = {}
  for _, name in ipairs(assert(tp.list_dir("examples"))) do
    if name:match("%.lua$") then names[#names + 1] = name end
  end
  local readme = expect.read_file("examples/README.md")
  local this = expect.read_file("spec/05-examples_spec.lua")

  for _, name in ipairs(names) do
    it(name .. " starts with a comment saying what it shows and the command that runs it, is listed and is run here",
      function()
        -- The comment lines the file starts with.
        local header = expect.read_file("examples/" .. name):match("^(%-%- .-)\n[^%-]")
        assert.is_truthy(header, name .. " has no header comment")
        assert.matches("lua5.4 examples/" .. name, header, 1, true)
        assert.matches("[" .. name .. "](" .. name .. ")", readme, 1, true)
        assert.matches('describe("examples/' .. name, this, 1, true)
      end)
  end

  it("haproxy/haproxy.cfg starts with the command that runs it, and is listed", function()
    local header = expect.read_file("examples/haproxy/haproxy.cfg"):match("^(# .-)\n[^#]")
    assert.matches("haproxy -db -f examples/haproxy/haproxy.cfg", header, 1, true)
    assert.matches("[haproxy/haproxy.cfg](haproxy/haproxy.cfg)", readme, 1, true)
  end)
end)

describe("examples/demo.lua", function()
  local status, out
  lazy_setup(function() status, out = run("examples/demo.lua") end)

  it("mints, shows and verifies a token, and shows what is refused", function()
    assert.are.equal(0, status, out)
    assert.matches("tokenpolicy.KeySet: 1 key (EC P-256 kid=demo-2026 private)", out, 1, true)
    assert.matches("JWT ES256, kid demo-2026, typ at+jwt", out, 1, true)
    assert.matches("signature ES256 by key demo-2026, subject alice", out, 1, true)
    assert.matches("expired: expired 1h ago", out, 1, true)
    assert.matches("bad_audience: the token is not meant for this audience", out, 1, true)
    assert.matches("bad_signature: the signature does not verify", out, 1, true)
    assert.matches("alg_not_allowed: alg none is never accepted", out, 1, true)
  end)

  it("finds, reads and removes a Rucio token in a sandbox", function()
    assert.matches("rucio    default  exists <sandbox>/alice/.rucio_alice/auth_token_for_account_alice   <- in use",
      out, 1, true)
    assert.matches("rucio    legacy   -      <sandbox>/alice/.rucio_alice/auth_token_alice", out, 1, true)
    assert.matches("read back %d+ bytes, mode 600, kind jwt", out)
    assert.matches("logged out: removed 3 entries", out, 1, true)
  end)

  it("judges sample tokens against the Arvados admin guide's policy", function()
    assert.matches("max_token_lifetime 1d, login_token_lifetime 12h, idle_timeout 5m", out, 1, true)
    assert.matches("a fresh API token:           valid        long-lived: false", out, 1, true)
    assert.matches("a token that never expires:  no_expiry    long-lived: true", out, 1, true)
    assert.matches("an idle Workbench login:     idle         long-lived: false", out, 1, true)
    assert.matches("tokenpolicy.Verdict: valid, expires", out, 1, true)
  end)
end)

describe("examples/inspect.lua", function()
  local dir, token_file
  before_each(function()
    dir = expect.new_dir()
    -- The sample token, as a token file of the user's own (0600).
    token_file = dir .. "/token"
    local sample = assert(tp.read_token("examples/sample/token.jwt", { allow_insecure = true }))
    assert(tp.write_token(token_file, sample))
  end)
  after_each(function() expect.remove_dir(dir) end)

  local function shown(file, verdict_lines)
    return table.concat({
      "token   " .. file .. " (438 bytes, jwt)",
      "header",
      "  alg  ES256",
      "  kid  sample-2026-11",
      "  typ  at+jwt",
      "claims",
      "  aud       rucio, fts",
      "  exp       2027-01-15 09:00:00 UTC",
      "  iat       2027-01-15 08:00:00 UTC",
      "  iss       https://idp.example.org",
      "  jti       sample-0001",
      "  nbf       2027-01-15 08:00:00 UTC",
      "  scope     storage.read:/ storage.create:/home/alice",
      "  sub       alice",
      "  wlcg.ver  1.0",
    }, "\n") .. "\n" .. verdict_lines
  end

  it("shows header, claims and expiry, and verifies the sample token with the sample key set", function()
    local status, out, err = run("examples/inspect.lua", { token_file, "examples/sample/jwks.json", "1800001800" })
    assert.are.same({ 0, "", shown(token_file, "expiry  2027-01-15 09:00:00 UTC: valid for 30m more\n"
      .. "verify  ok: ES256 signature by key sample-2026-11 of examples/sample/jwks.json (2 keys), subject alice\n") },
      { status, err, out })
  end)

  it("says how long ago it expired, and refuses it, exit 1", function()
    local status, out, err = run("examples/inspect.lua", { token_file, "examples/sample/jwks.json", "1800007200" })
    assert.are.same({ 1, "", shown(token_file, "expiry  2027-01-15 09:00:00 UTC: expired 1h ago\n"
      .. "verify  refused: expired: expired 1h ago\n") }, { status, err, out })
  end)

  it("refuses it with a key set that lacks its key", function()
    local keys = dir .. "/other.jwks"
    local sample = tp.json_decode(assert(tp.read_config("examples/sample/jwks.json")))
    table.remove(sample.keys, 1)
    expect.write_file(keys, tp.json_encode(sample))
    local status, out = run("examples/inspect.lua", { token_file, keys, "1800001800" })
    assert.are.equal(1, status)
    assert.matches("\nverify  refused: unknown_key: ", out)
  end)

  it("exits 2 and says why when the key set cannot be read", function()
    local status, _, err = run("examples/inspect.lua", { token_file, dir .. "/missing.jwks", "1800001800" })
    assert.are.equal(2, status)
    assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/missing%.jwks: not_found: [^\n]+\n$", err)
  end)

  it("inspects the sample by default, and warns that a file others can read is exposed", function()
    local readable = dir .. "/readable"
    expect.write_file(readable, (assert(tp.read_token(token_file))) .. "\n")
    os.execute("chmod 644 " .. quote(readable))
    local status, out, err = run("examples/inspect.lua", { readable, "examples/sample/jwks.json", "1800001800" })
    assert.are.equal(0, status)
    assert.are.equal(("warning: the token file %s is readable by others (mode 0644); fix it with: chmod 600 %s\n")
      :format(readable, readable), err)
    assert.are.equal(shown(readable, ""), out:match("^(.-\n)expiry"))
    local _, default_out = run("examples/inspect.lua")
    assert.matches("^token   examples/sample/token.jwt %(438 bytes, jwt%)\nheader\n", default_out)
    -- Never a piece of the token: neither its payload segment nor its signature.
    local _, payload, signature = (assert(tp.read_token(token_file))):match("^([^.]+)%.([^.]+)%.([^.]+)$")
    for _, piece in ipairs { payload, signature } do
      assert.is_nil(default_out:find(piece, 1, true))
      assert.is_nil(out:find(piece, 1, true))
    end
  end)
end)

describe("examples/switch_account.lua", function()
  it("switches between Rucio accounts in its own sandbox, and removes the sandbox", function()
    local dir = expect.new_dir()
    -- mktemp makes the example's sandbox under TMPDIR: here, to see it go.
    local status, out, err = run("examples/switch_account.lua", {}, { TMPDIR = dir })
    local left = tp.list_dir(dir)
    expect.remove_dir(dir)
    assert.are.same({ 0, "", {} }, { status, err, left })
    assert.are.equal([[

== jdoe's Rucio tokens
account source   active state    expires                 path
root    default  yes    valid    2027-01-15 09:00:00 UTC <sandbox>/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root
alice   cache    -      valid    2027-01-15 10:00:00 UTC <sandbox>/tmp/jdoe/.rucio_jdoe/auth_token_for_account_alice
bob     cache    -      expired  2027-01-15 07:50:00 UTC <sandbox>/tmp/jdoe/.rucio_jdoe/auth_token_for_account_bob

== switch to alice
export RUCIO_ACCOUNT=alice
valid until 2027-01-15 10:00:00 UTC

== switch to bob
export RUCIO_ACCOUNT=bob
the token expired at 2027-01-15 07:50:00 UTC: run rucio whoami to log in again

== switch to carol
export RUCIO_ACCOUNT=carol
no token for carol: run rucio whoami to log in

== switch to alice for good: log root out, write alice into rucio.cfg
export RUCIO_ACCOUNT=alice
valid until 2027-01-15 10:00:00 UTC
ok remove <sandbox>/tmp/jdoe/.rucio_jdoe/auth_token_for_account_root: removed
ok remove <sandbox>/tmp/jdoe/.rucio_jdoe/auth_token_exp_for_account_root: removed
ok persist <sandbox>/rucio.cfg: [client] account = alice
rucio.cfg now reads:
# the site's client settings
[client]
rucio_host = https://rucio.example.org
account = alice
auth_type = userpass

== jdoe's Rucio tokens after the switch
account source   active state    expires                 path
alice   default  yes    valid    2027-01-15 10:00:00 UTC <sandbox>/tmp/jdoe/.rucio_jdoe/auth_token_for_account_alice
bob     cache    -      expired  2027-01-15 07:50:00 UTC <sandbox>/tmp/jdoe/.rucio_jdoe/auth_token_for_account_bob
]], out)
  end)
end)

describe("examples/policy_report.lua", function()
  -- The table as the example lays it out: columns as wide as their longest cell.
  local function table_of(rows)
    local widths = { 0, 0, 0 }
    for _, row in ipairs(rows) do
      for i = 1, 3 do widths[i] = math.max(widths[i], #row[i]) end
    end
    local lines = {}
    for _, row in ipairs(rows) do
      lines[#lines + 1] = ("%-" .. widths[1] .. "s  %-" .. widths[2] .. "s  %-" .. widths[3] .. "s  %s")
        :format(table.unpack(row))
    end
    return table.concat(lines, "\n") .. "\n"
  end

  it("reports the tokens of its own sandbox's users that break the policy, and removes the sandbox", function()
    local dir = expect.new_dir()
    local status, out, err = run("examples/policy_report.lua", {}, { TMPDIR = dir })
    local left = tp.list_dir(dir)
    expect.remove_dir(dir)
    assert.are.same({ 1, "", {} }, { status, err, left })
    local me = tp.user(tp.euid()).name
    assert.are.equal("policy: tokens may live 1d (arvados-config.yml); judged at 2027-01-15 08:00:00 UTC\n"
      .. table_of {
        { "user", "token", "verdict", "expires" },
        { "alice", "alice/.rucio_alice@atlas/auth_token_for_account_atlasprod", "exceeds_policy", "2027-02-14 08:00" },
        { "bob", "bob/.rucio_bob/auth_token_for_account_bob", "expired", "2027-01-15 07:50" },
        { "bob", "bob/.rucio_bob/auth_token_for_default_account", "no_expiry", "never" },
        { me, "bt_u" .. tp.euid(), "exceeds_policy", "2027-04-15 08:00" },
        { "carol", "carol/.rucio_carol/auth_token_for_account_carol", "valid, readable by others", "2027-01-15 10:00" },
      }
      .. "3 token files break the policy; 1 expired; 1 readable by others\n", out)
  end)

  it("reports on a directory it is given, with a policy from another config, and follows no link", function()
    local dir = expect.new_dir()
    local root = dir .. "/tmp"
    local now = 1700000000
    assert(tp.write_token(root .. "/dave/.rucio_dave/auth_token_for_account_dave", "dave-/CN=dave-webui-0123"))
    assert(tp.write_token(root .. "/dave/.rucio_dave/auth_token_exp_for_account_dave", tostring(now + 13 * 3600)))
    assert(tp.write_token(root .. "/erin/.rucio_erin/auth_token_for_account_erin", "erin-/CN=erin-webui-0123"))
    assert(tp.write_token(root .. "/erin/.rucio_erin/auth_token_exp_for_account_erin", tostring(now + 3600)))
    assert(os.execute(("mkdir %s && ln -s /etc %s"):format(quote(root .. "/frank"),
      quote(root .. "/frank/.rucio_frank"))))
    local config = dir .. "/config.yml"
    expect.write_file(config, "Clusters:\n  zzzzz:\n    Login:\n      TokenLifetime: 12h\n")
    local status, out, err = run("examples/policy_report.lua", { root, tostring(now), config })
    expect.remove_dir(dir)
    assert.are.same({ 1, "" }, { status, err })
    assert.are.equal("policy: tokens may live 12h (config.yml); judged at 2023-11-14 22:13:20 UTC\n"
      .. table_of {
        { "user", "token", "verdict", "expires" },
        { "dave", "dave/.rucio_dave/auth_token_for_account_dave", "exceeds_policy", "2023-11-15 11:13" },
      }
      .. "skipped frank/.rucio_frank: a symbolic link: not followed\n"
      .. "1 token files break the policy; 0 expired; 0 readable by others\n", out)
  end)

  it("exits 0 when no token breaks the policy", function()
    local dir = expect.new_dir()
    local status, out = run("examples/policy_report.lua", { dir, "1700000000" })
    expect.remove_dir(dir)
    assert.are.same({ 0, "policy: tokens may live 1d (arvados-config.yml); judged at 2023-11-14 22:13:20 UTC\n"
      .. "user  token  verdict  expires\n0 token files break the policy; 0 expired; 0 readable by others\n" },
      { status, out })
  end)
end)

describe("examples/migrate_dry_run.lua (a real PostgreSQL)", function()
  local postgres = require "helpers.postgres"
  local pg

  lazy_setup(function()
    pg = postgres.new()
    pg:create_arvados()
    pg:psql(expect.read_file("examples/sample/arvados-tokens.sql"))
  end)
  lazy_teardown(function()
    if pg then pg:stop() end
  end)

  -- Every column of every row, in order.
  local function rows()
    return pg:psql("SELECT a.* FROM api_client_authorizations a ORDER BY id;")
      .. pg:psql("SELECT u.* FROM users u ORDER BY id;")
  end

  it("prints the rake tasks' lines for the sample rows, and changes nothing", function()
    local before = rows()
    local status, out, err = run("examples/migrate_dry_run.lua", { pg:conninfo(), "1800000000" })
    assert.are.same({ 1, "" }, { status, err })
    assert.are.equal([[
== check: the tokens that outlive the policy
*** WARNING, found ApiClientAuthorization with invalid user: auth id: 109, user id: 99
Found 4 long-lived tokens from users:
alice,alice@example.org,zzzzz-tpzed-a11ce0000000001
bob,bob@example.org,zzzzz-tpzed-b0b000000000002
carol,carol@example.org,zzzzz-tpzed-ca4010000000003

== fix, dry run: what it would do (one transaction, rolled back)
Setting token expiration to: 2027-01-16 08:00:00 +0000
*** WARNING, found ApiClientAuthorization with invalid user: auth id: 109, user id: 99
4 tokens would be updated (dry run: nothing was changed).

dry run: 4 tokens would expire at 2027-01-16 08:00:00 UTC; nothing was changed
to apply: tokenpolicy fix-long-lived --db CONNINFO --config examples/sample/arvados-config.yml
]], out)
    assert.are.equal(before, rows())
    assert.matches("\n103|sampletoken103|0|3|||||2026-06-01 00:00:00|", before, 1, true)
  end)

  it("finds nothing a day later with a 60-day policy, and exits 0", function()
    local config = pg.dir .. "/config.yml"
    expect.write_file(config, "Clusters:\n  zzzzz:\n    API:\n      MaxTokenLifetime: 1440h\n")
    pg:psql("UPDATE api_client_authorizations SET expires_at = '2027-01-20' WHERE expires_at IS NULL;")
    local before = rows()
    local status, out = run("examples/migrate_dry_run.lua", { pg:conninfo(), "1800086400", config })
    assert.are.equal(0, status)
    assert.matches("^== check: the tokens that outlive the policy\nNo long%-lived tokens found%.\n", out)
    assert.matches("\n0 tokens would be updated (dry run: nothing was changed).\n", out, 1, true)
    assert.are.equal(before, rows())
  end)

  it("says why, in one line, when the database cannot be reached, and exits 2", function()
    -- LuaDBI's driver leaks the connection object of a failed connect (not
    -- ours to fix, see spec 30): `make asan`'s leak check is off for it.
    local status, out, err = run("examples/migrate_dry_run.lua", { "host=" .. pg.dir .. "/nowhere dbname=arvados" },
      { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":detect_leaks=0" })
    assert.are.same({ 2, "" }, { status, out })
    assert.matches("^unreachable: PostgreSQL %(arvados%): [^\n]+\n$", err)
  end)
end)

describe("examples/logout_revoke.lua (a real OpenID provider)", function()
  local oidc = require "helpers.oidc"
  local p, dir
  lazy_setup(function() p = oidc.start() end)
  lazy_teardown(function() if p then oidc.stop(p) end end)
  before_each(function()
    dir = expect.new_dir()
    -- Where the example's sandbox goes (mktemp -d under TMPDIR): to see it go.
    assert(os.execute("mkdir " .. quote(dir .. "/box")))
  end)
  after_each(function() expect.remove_dir(dir) end)

  local function credentials(extra)
    local env = { TOKENPOLICY_CLIENT_ID = oidc.client_id, TOKENPOLICY_CLIENT_SECRET = oidc.client_secret }
    for k, v in pairs(extra or {}) do env[k] = v end
    return env
  end

  it("revokes the opaque token, denylists the JWT's jti, removes both files, and a second logout has nothing to do",
    function()
      local opaque = oidc.client_credentials(p)
      local jwt = oidc.client_credentials(p, { resource = "https://rucio.example.org", scope = "storage.read:/" })
      local claims = assert(tp.decode(jwt)).claims
      assert(tp.write_token(dir .. "/given/opaque", opaque))
      assert(tp.write_token(dir .. "/given/jwt", jwt))
      local deny = dir .. "/denylist"
      local status, out, err = run("examples/logout_revoke.lua",
        { p.issuer, deny, dir .. "/given/opaque", dir .. "/given/jwt" }, credentials { TMPDIR = dir .. "/box" })
      assert.are.same({ 0, "" }, { status, err })
      local bt = "<sandbox>/run/bt_u" .. tp.euid()
      -- "opaque", or "arvados_v1" when the provider's random token happens
      -- to be letters and digits only (as an Arvados v1 token is).
      local kind = tp.classify(opaque).kind
      local file = "<sandbox>/home/.config/bearer_token"
      assert.are.equal(([[

== before
token 1 (KIND, BT): the provider says it is active
token 2 (jwt, FILE): the gateway accepts it

== logout, dry run
would denylist jti JTI: would add it to tokenpolicy.Denylist DENY (0 entries)
would remove   FILE: would remove it
would revoke   <issuer>: would revoke it at its issuer (RFC 7009)
would remove   BT: would remove it
dry run: nothing was changed

== logout
ok    denylist jti JTI: added until EXP
ok    remove   FILE: removed
ok    revoke   <issuer>/token/revocation: revoked
ok    remove   BT: removed
logged out

== after
token 1 (KIND, BT): the provider says it is inactive
token 2 (jwt, FILE): the gateway refuses it: revoked: the token's jti is on the denylist
the denylist file holds 1 entries

== logout again
nothing to do: no tokens found
]]):gsub("%u%u+", { KIND = kind, BT = bt, FILE = file, JTI = claims.jti, DENY = deny,
        EXP = os.date("!%Y-%m-%d %H:%M:%S UTC", claims.exp) }), out)
      -- Checked here too: the provider's and the denylist file's own word.
      local info = assert(tp.introspect { endpoint = p.introspection_endpoint, token = opaque,
                                          client_id = oidc.client_id, client_secret = oidc.client_secret })
      assert.is_false(info.active)
      local list = assert(tp.denylist(deny))
      assert.is_true(list:contains(claims.jti, claims.exp - 1))
      list:close()
      -- The files it was given are left alone; its sandbox is gone; no token was shown.
      assert.are.equal(opaque, (tp.read_token(dir .. "/given/opaque")))
      assert.are.equal(jwt, (tp.read_token(dir .. "/given/jwt")))
      assert.are.same({}, tp.list_dir(dir .. "/box"))
      assert.is_nil(out:find(opaque, 1, true))
      assert.is_nil(out:find(jwt:match("%.([^.]+)%."), 1, true))
      assert.is_nil(out:find(jwt:match("[^.]+$"), 1, true))
    end)

  it("refuses a token file others can read, exits 2 and leaves nothing behind", function()
    expect.write_file(dir .. "/token", "opaque-token-value")
    assert(os.execute("chmod 644 " .. quote(dir .. "/token")))
    local status, out, err = run("examples/logout_revoke.lua", { p.issuer, dir .. "/denylist", dir .. "/token" },
      credentials { TMPDIR = dir .. "/box" })
    assert.are.same({ 2, "" }, { status, out })
    assert.matches("^insecure_permissions: [^\n]*" .. dir:gsub("%p", "%%%0") .. "/token", err)
    assert.are.same({}, tp.list_dir(dir .. "/box"))
  end)

  it("says why and exits 2 when the issuer cannot be reached, leaving nothing behind", function()
    local gone = oidc.start()
    oidc.stop(gone)
    assert(tp.write_token(dir .. "/token", "opaque-token-value"))
    local status, out, err = run("examples/logout_revoke.lua", { gone.issuer, dir .. "/denylist", dir .. "/token" },
      credentials { TMPDIR = dir .. "/box" })
    assert.are.same({ 2, "" }, { status, out })
    assert.matches("^unreachable: ", err)
    assert.are.same({}, tp.list_dir(dir .. "/box"))
  end)
end)

describe("examples/haproxy/haproxy.cfg (a real HAProxy)", function()
  local haproxy = require "helpers.haproxy"
  local crypto = require "helpers.crypto"
  local h, key

  -- HAProxy runs the example's own file; only the paths and settings its
  -- presetenv lines take from the environment are given (helpers/haproxy.lua).
  lazy_setup(function()
    local pem = crypto.ec_private("P-256")
    key = assert(tp.keys(pem, { kid = "gw-1" }))
    local dir = haproxy.sandbox()
    haproxy.write(dir .. "/keys.pem", crypto.public_of(pem))
    local list = assert(tp.denylist(dir .. "/denylist"))
    assert(list:add("revoked-jti", os.time() + 3600))
    list:close()
    h = haproxy.start { dir = dir, settings = { KEYS_FILE = dir .. "/keys.pem", DENYLIST = dir .. "/denylist",
      ISS = "https://idp.example.org", AUD = "rucio" } }
  end)
  lazy_teardown(function() haproxy.stop(h) end)

  local function bearer(jti)
    local now = os.time()
    local token = assert(tp.sign({ iss = "https://idp.example.org", aud = "rucio", sub = "alice", scope = "read",
      iat = now, exp = now + 600, jti = jti }, key, { alg = "ES256" }))
    return { authorization = "Bearer " .. token }
  end

  it("passes a valid token on to the service, which sees its subject", function()
    local status, _, body = haproxy.get(h, bearer("fresh-jti"))
    assert.are.same({ 200, "subject=alice\n" }, { status, body })
  end)

  it("refuses a token whose jti is on the denylist with 401 and an RFC 6750 challenge", function()
    local status, headers, body = haproxy.get(h, bearer("revoked-jti"))
    assert.are.same({ 401, 'Bearer realm="api", error="invalid_token", error_description="revoked"',
      "invalid token\n" }, { status, headers["www-authenticate"], body })
  end)
end)
