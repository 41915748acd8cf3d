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
end)
