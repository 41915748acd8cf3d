-- What the outside review of the lifetime policy found (issue 8), one
-- describe per finding: Arvados' exemption of the SystemRootToken only,
-- refreshes_at (Arvados 3.1+), tokens whose user is missing, the config
-- loader's rules, token strings, days, exact spans, and the layering.
local tp = require "tokenpolicy"
local core = require "tokenpolicy.core"
local expect = require "helpers.expect"

local NOW = 1767225600  -- 2026-01-01 00:00:00 UTC
local M, H, D = 60, 3600, 86400
local ROOT = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"  -- 50 characters
local ROOT_USER = "zzzzz-tpzed-000000000000000"

describe("the system root exemption", function()
  after_each(function() collectgarbage() end)

  for _, compat in ipairs { "docs", "arvados" } do
    it("clamps a saved token merely owned by the system root user (" .. compat .. ")", function()
      local p = tp.policy { max_token_lifetime = "24h", compat = compat }
      local v = p:evaluate({ created_at = NOW - 3 * D, owner_uuid = ROOT_USER }, NOW)
      assert.are.equal("no_expiry", v.state)
      assert.are.equal(NOW, v.fix_expires_at)
    end)

    it("exempts a record of kind system_root (" .. compat .. ")", function()
      local p = tp.policy { max_token_lifetime = "24h", compat = compat }
      local v = p:evaluate({ created_at = NOW - 3 * D, kind = "system_root" }, NOW)
      assert.are.equal("valid", v.state)
      assert.is_nil(v.fix_expires_at)
      assert.is_true(v.can_manage_tokens)
    end)

    it("exempts the record whose api_token is the configured system_root_token (" .. compat .. ")", function()
      local p = tp.policy { max_token_lifetime = "24h", system_root_token = ROOT, compat = compat }
      local v = p:evaluate({ created_at = NOW - 3 * D, api_token = ROOT, owner_uuid = ROOT_USER }, NOW)
      assert.are.equal("valid", v.state)
      assert.is_true(v.can_manage_tokens)
      -- another token of the same user, or one a character off, is not exempt
      for _, other in ipairs { ROOT:sub(2), ROOT .. "x", ROOT:sub(1, -2) .. "y", "" } do
        v = p:evaluate({ created_at = NOW - 3 * D, api_token = other, owner_uuid = ROOT_USER }, NOW)
        assert.are.equal("no_expiry", v.state)
      end
    end)
  end

  it("refuses token management to a root-owned saved token when IssueTrustedTokens is false, as Arvados does",
    function()
      local p = tp.policy { issue_trusted_tokens = false, compat = "arvados", system_root_token = ROOT }
      assert.is_false(p:evaluate({ owner_uuid = ROOT_USER }, NOW).can_manage_tokens)
      assert.is_true(p:evaluate({ owner_uuid = ROOT_USER, api_token = ROOT }, NOW).can_manage_tokens)
    end)

  it("treats the anonymous user's saved tokens like any other, and kind anonymous as configured", function()
    local p = tp.policy { max_token_lifetime = "24h" }
    assert.are.equal("no_expiry", p:evaluate({ owner_uuid = "zzzzz-tpzed-anonymouspublic" }, NOW).state)
    local v = p:evaluate({ kind = "anonymous" }, NOW)
    assert.are.equal("valid", v.state)
    assert.is_false(v.can_manage_tokens)
  end)

  it("still skips the system root and anonymous users in the long-lived selection, saying why", function()
    local p = tp.policy { max_token_lifetime = "24h", system_root_token = ROOT }
    assert.are.same({ false, NOW + D, "system_root" }, { p:long_lived({ owner_uuid = ROOT_USER }, NOW) })
    assert.are.same({ false, NOW + D, "anonymous" },
      { p:long_lived({ owner_uuid = "zzzzz-tpzed-anonymouspublic" }, NOW) })
    -- not long-lived anyway: no reason to give
    assert.are.same({ false, NOW + D }, { p:long_lived({ owner_uuid = ROOT_USER, expires_at = NOW + H }, NOW) })
  end)

  it("never shows the system root token", function()
    local p = tp.policy { max_token_lifetime = "24h", system_root_token = ROOT }
    assert.are.equal("tokenpolicy.Policy (compat docs): max_token_lifetime 1d, login_token_lifetime off, "
      .. "idle_timeout off, issue_trusted_tokens true, refresh_before_exp 20m, system_root_token set", tostring(p))
    assert.is_nil(p:settings().system_root_token)
    local v = p:evaluate({ created_at = NOW - 3 * D, api_token = ROOT .. "y" }, NOW)
    assert.is_nil(tostring(v):find("xxxxxxxx", 1, true))
    local _, msg = p:evaluate({ api_token = ROOT, expires_at = "soon" }, NOW)
    assert.is_nil(msg:find("xxxxxxxx", 1, true))
  end)

  it("raises on a system_root_token that is not text, or empty", function()
    assert.has_error(function() tp.policy { system_root_token = 5 } end,
      "bad argument #1 to 'policy' (system_root_token must be a string)")
    assert.has_error(function() tp.policy { system_root_token = "" } end,
      "bad argument #1 to 'policy' (system_root_token must not be empty)")
  end)
end)

describe("refreshes_at", function()
  after_each(function() collectgarbage() end)
  local p = tp.policy { max_token_lifetime = "24h" }

  it("ends a record's validity, strictly, like expires_at", function()
    local v = p:evaluate({ created_at = NOW - H, expires_at = NOW + 2 * H, refreshes_at = NOW }, NOW)
    assert.are.equal("expired", v.state)
    assert.are.equal(NOW, v.expires_at)
    assert.are.equal(0, v.remaining)
    assert.are.same({ "valid only until 2026-01-01 00:00:00 UTC (refreshes_at, 0s ago): Arvados checks it with "
      .. "the identity provider again before it accepts it" }, v.reasons)
    v = p:evaluate({ created_at = NOW - H, expires_at = NOW + 2 * H, refreshes_at = NOW + 1 }, NOW)
    assert.are.equal("valid", v.state)
    assert.are.equal(NOW + 1, v.expires_at)
    assert.are.equal(1, v.remaining)
  end)

  it("makes a cached OIDC row (no expires_at) not a no_expiry token", function()
    local v = p:evaluate({ created_at = NOW - H, expires_at = tp.null, refreshes_at = NOW + 5 * M }, NOW)
    assert.are.equal("valid", v.state)
    assert.are.equal(NOW + 5 * M, v.expires_at)
    assert.are.equal(5 * M, v.remaining)
    assert.is_nil(v.fix_expires_at)
    v = p:evaluate({ refreshes_at = "2025-12-31T23:00:00Z" }, NOW)
    assert.are.equal("expired", v.state)
  end)

  it("counts toward the lifetime rule like an expiry", function()
    local v = p:evaluate({ created_at = NOW - H, refreshes_at = NOW + 30 * D }, NOW)
    assert.are.equal("exceeds_max_lifetime", v.state)
    assert.are.equal(NOW + 23 * H, v.fix_expires_at)
    assert.are.same({ "lasts 30d1h from its creation at 2025-12-31 23:00:00 UTC, longer than the maximum token "
      .. "lifetime (API.MaxTokenLifetime) of 1d: set expires_at to 2026-01-01 23:00:00 UTC" }, v.reasons)
    v = p:evaluate({ expires_at = tp.null, refreshes_at = NOW + 2 * D }, NOW)
    assert.are.same({ "expires in 2d, more than the maximum token lifetime (API.MaxTokenLifetime) of 1d from now: "
      .. "set expires_at to 2026-01-02 00:00:00 UTC" }, v.reasons)
  end)

  it("returns malformed for a refreshes_at that is no time", function()
    expect.fails("malformed", p:evaluate({ refreshes_at = "later" }, NOW))
  end)
end)

describe("long_lived and a token whose user is missing", function()
  after_each(function() collectgarbage() end)
  local p = tp.policy { login_token_lifetime = "12h" }

  it("does not select it, and says invalid_user", function()
    local record = { id = 7, user_id = 42, owner_uuid = tp.null, expires_at = tp.null }
    assert.are.same({ false, NOW + 12 * H, "invalid_user" }, { p:long_lived(record, NOW) })
    local line = ("*** WARNING, found ApiClientAuthorization with invalid user: auth id: %d, user id: %d")
      :format(record.id, record.user_id)
    assert.are.equal("*** WARNING, found ApiClientAuthorization with invalid user: auth id: 7, user id: 42", line)
  end)

  it("says nothing of it when it is not long-lived anyway, as the rake task's query skips it", function()
    assert.are.same({ false, NOW + 12 * H }, { p:long_lived({ owner_uuid = tp.null, expires_at = NOW + H }, NOW) })
  end)

  it("selects a record whose owner is simply not given", function()
    assert.are.same({ true, NOW + 12 * H }, { p:long_lived({}, NOW) })
  end)
end)

describe("policy_from_arvados and Arvados' config loader", function()
  local dir
  before_each(function() dir = expect.new_dir() end)
  after_each(function()
    expect.remove_dir(dir)
    collectgarbage()
  end)

  local function write(text)
    local path = dir .. "/config.yml"
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    return path
  end

  local function cluster(section, body)
    return "Clusters:\n  zzzzz:\n    " .. section .. ":\n      " .. body .. "\n"
  end

  it("reports Login.TrustLoginTokens as an unknown key and ignores it", function()
    local p, warnings = tp.policy_from_arvados(write(cluster("Login", "TrustLoginTokens: false")))
    assert.is_true(p:settings().issue_trusted_tokens)
    assert.are.same({ "Clusters.zzzzz.Login.TrustLoginTokens: unknown key, ignored (Arvados reads "
      .. "Login.IssueTrustedTokens)" }, warnings)
    p, warnings = tp.policy_from_arvados(write(cluster("Login", "IssueTrustedTokens: false\n      "
      .. "TrustLoginTokens: true")))
    assert.is_false(p:settings().issue_trusted_tokens)
    assert.are.equal(1, #warnings)
  end)

  it("returns an empty warnings list for a clean configuration", function()
    local p, warnings = tp.policy_from_arvados(write(cluster("API", "MaxTokenLifetime: 24h")))
    assert.are.equal(86400, p:settings().max_token_lifetime)
    assert.are.same({}, warnings)
  end)

  for _, case in ipairs {
    { 'TokenLifetime: "3600"', 'invalid duration "3600": missing unit (Arvados reads Go durations)' },
    { "TokenLifetime: 3600", 'invalid duration "3600": missing unit (Arvados reads Go durations)' },
    { "TokenLifetime: 1d", 'invalid duration "1d": unknown unit "d" (Arvados reads Go durations)' },
    { "TokenLifetime: 1d12h", 'invalid duration "1d12h": unknown unit "d" (Arvados reads Go durations)' },
    { 'TokenLifetime: "00"', 'invalid duration "00": missing unit (Arvados reads Go durations)' },
  } do
    it("returns malformed for " .. case[1] .. ", which Go does not parse", function()
      local msg = expect.fails("malformed", tp.policy_from_arvados(write(cluster("Login", case[1]))))
      assert.are.equal("malformed: Clusters.zzzzz.Login.TokenLifetime: " .. case[2], msg)
    end)
  end

  for _, text in ipairs { "0", '"0"', "-0", '"+0"', "0s" } do
    it("takes " .. text .. " as zero, as Arvados does", function()
      local p = assert(tp.policy_from_arvados(write(cluster("API", "MaxTokenLifetime: " .. text))))
      assert.are.equal(0, p:settings().max_token_lifetime)
    end)
  end

  it("takes a negative duration, as Go and Arvados do, as off, with a warning", function()
    local p, warnings = tp.policy_from_arvados(write(cluster("API", "MaxTokenLifetime: -1h")))
    assert.are.equal(0, p:settings().max_token_lifetime)
    assert.are.same({ "Clusters.zzzzz.API.MaxTokenLifetime: -1h is negative: off, as in Arvados' server (its "
      .. "rules apply only above zero; its rake tasks would take it as is)" }, warnings)
  end)

  it("reads SystemRootToken, so that only that token is exempt", function()
    local p = assert(tp.policy_from_arvados(write("Clusters:\n  zzzzz:\n    SystemRootToken: " .. ROOT
      .. "\n    API:\n      MaxTokenLifetime: 24h\n")))
    assert.are.equal("valid", p:evaluate({ created_at = NOW - 3 * D, api_token = ROOT }, NOW).state)
    assert.are.equal("no_expiry", p:evaluate({ created_at = NOW - 3 * D, owner_uuid = ROOT_USER }, NOW).state)
  end)

  it("refuses a SystemRootToken Arvados refuses, without showing it", function()
    local msg = expect.fails("malformed", tp.policy_from_arvados(write(
      "Clusters:\n  zzzzz:\n    SystemRootToken: \"secret-with/odd+chars\"\n")))
    assert.are.equal("malformed: Clusters.zzzzz.SystemRootToken: unacceptable characters in token "
      .. "(only a-z, A-Z, 0-9)", msg)
    assert.is_nil(msg:find("secret", 1, true))
  end)

  it("warns of a short SystemRootToken, without showing it", function()
    local _, warnings = assert(tp.policy_from_arvados(write("Clusters:\n  zzzzz:\n    SystemRootToken: abc123\n")))
    assert.are.same({ "Clusters.zzzzz.SystemRootToken: shorter than 32 characters" }, warnings)
  end)
end)

describe("the layering", function()
  it("has no policy_from_arvados in the C core: the facade loads it from Lua", function()
    assert.is_nil(rawget(core, "policy_from_arvados"))
    assert.are.equal(require("tokenpolicy.arvados_config").policy_from_arvados, tp.policy_from_arvados)
  end)
end)

describe("evaluate on a token string", function()
  after_each(function() collectgarbage() end)
  local key = assert(tp.keys('{"kty":"oct","k":"' .. tp.b64url_encode(("k"):rep(32)) .. '"}'))
  local p = tp.policy { max_token_lifetime = "24h" }

  it("decodes a compact JWT", function()
    local token = tp.sign({ iat = NOW - H, exp = NOW + 2 * D }, key, { alg = "HS256" })
    local v = p:evaluate(token, NOW)
    assert.are.equal("exceeds_max_lifetime", v.state)
    assert.are.equal(NOW + 23 * H, v.expires_at)
  end)

  it("returns decode's fail triple for text that is no JWT, without the token", function()
    local token = "v2/zzzzz-gj3su-0123456789abcde/" .. ("s"):rep(40)
    local msg = expect.fails("malformed", p:evaluate(token, NOW))
    assert.are.same({ tp.decode(token) }, { p:evaluate(token, NOW) })
    assert.is_nil(msg:find(("s"):rep(40), 1, true))
  end)

  it("raises on a token that is neither a table nor text", function()
    assert.has_error(function() p:evaluate(5) end,
      "bad argument #1 to 'evaluate' (table or string expected, got number)")
  end)
end)

describe("days and exact spans", function()
  after_each(function() collectgarbage() end)

  for _, case in ipairs { { "1d", 86400 }, { "3d4h", 273600 }, { "1d1m", 86460 }, { "2d3h4m5s", 183845 },
                          { "0.5d", 43200 }, { "-1d", -86400 } } do
    it(("parses %q as %d"):format(case[1], case[2]), function()
      assert.are.equal(case[2], tp.duration(case[1]))
    end)
  end

  it("reads back every format_duration output", function()
    for _, seconds in ipairs { 86400, 90000, 172800, 30 * 86400, 3 * 86400 + 4 * 3600 } do
      assert.are.equal(seconds, tp.duration(tp.format_duration(seconds)))
    end
  end)

  it("shows exact spans in reasons", function()
    local p = tp.policy { max_token_lifetime = "1d" }
    assert.are.same({ "lasts 1d1m from its creation at 2026-01-01 00:00:00 UTC, longer than the maximum token "
      .. "lifetime (API.MaxTokenLifetime) of 1d: set expires_at to 2026-01-02 00:00:00 UTC" },
      p:evaluate({ created_at = NOW, expires_at = NOW + D + M }, NOW).reasons)
    assert.are.same({ "expired at 2025-12-30 22:58:59 UTC (1d1h1m1s ago): create a new token" },
      p:evaluate({ expires_at = NOW - D - H - M - 1 }, NOW).reasons)
    assert.are.equal("tokenpolicy.Policy (compat docs): max_token_lifetime 1d1h1m, login_token_lifetime off, "
      .. "idle_timeout off, issue_trusted_tokens true, refresh_before_exp 20m",
      tostring(tp.policy { max_token_lifetime = D + H + M }))
  end)
end)

describe("policy_from_arvados reads through the core", function()
  after_each(function() collectgarbage() end)

  it("fails at once on a FIFO instead of hanging", function()
    local dir = expect.new_dir()
    assert(os.execute("mkfifo " .. dir .. "/config.yml"))
    local started = os.time()
    local p, msg, code = tp.policy_from_arvados(dir .. "/config.yml")
    expect.remove_dir(dir)
    assert.is_nil(p)
    assert.are.equal("io", code, msg)
    assert.is_true(os.time() - started <= 1)
  end)
end)
