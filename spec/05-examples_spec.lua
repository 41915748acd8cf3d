-- Every script in examples/ runs, under the Lua that runs the specs.
-- The interpreter of the Lua version running the specs (lua5.4, lua5.3).
local interpreter = "lua" .. _VERSION:match("%d+%.%d+")

local function run(script)
  local cmd = ("LUA_PATH=%q LUA_CPATH=%q %s %s 2>&1"):format(
    package.path, package.cpath, interpreter, script)
  local pipe = assert(io.popen(cmd))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok, out
end

describe("examples/demo.lua", function()
  it("mints, shows and verifies a token, and shows what is refused", function()
    local ok, out = run("examples/demo.lua")
    assert.is_true(ok, out)
    assert.matches("tokenpolicy.KeySet: 1 key (EC P-256 kid=demo-2026 private)", out, 1, true)
    assert.matches("JWT ES256, kid demo-2026, typ at+jwt", out, 1, true)
    assert.matches("signature ES256 by key demo-2026, subject alice", out, 1, true)
    assert.matches("expired: expired 1h ago", out, 1, true)
    assert.matches("bad_audience: the token is not meant for this audience", out, 1, true)
    assert.matches("bad_signature: the signature does not verify", out, 1, true)
    assert.matches("alg_not_allowed: alg none is never accepted", out, 1, true)
  end)

  it("finds, reads and removes a Rucio token in a sandbox", function()
    local ok, out = run("examples/demo.lua")
    assert.is_true(ok, out)
    assert.matches("rucio    default  exists <sandbox>/alice/.rucio_alice/auth_token_for_account_alice   <- in use",
      out, 1, true)
    assert.matches("rucio    legacy   -      <sandbox>/alice/.rucio_alice/auth_token_alice", out, 1, true)
    assert.matches("read back %d+ bytes, mode 600, kind jwt", out)
    assert.matches("logged out: removed 3 entries", out, 1, true)
  end)

  it("judges sample tokens against the Arvados admin guide's policy", function()
    local ok, out = run("examples/demo.lua")
    assert.is_true(ok, out)
    assert.matches("max_token_lifetime 1d, login_token_lifetime 12h, idle_timeout 5m", out, 1, true)
    assert.matches("a fresh API token:           valid        long-lived: false", out, 1, true)
    assert.matches("a token that never expires:  no_expiry    long-lived: true", out, 1, true)
    assert.matches("an idle Workbench login:     idle         long-lived: false", out, 1, true)
    assert.matches("tokenpolicy.Verdict: valid, expires", out, 1, true)
  end)
end)
