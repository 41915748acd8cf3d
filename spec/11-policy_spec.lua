-- Lifetime policy: the Arvados rules (API.MaxTokenLifetime,
-- Login.TokenLifetime, Login.IssueTrustedTokens, Workbench.IdleTimeout),
-- in both readings (compat "docs" and "arvados"), the rake tasks'
-- selection, and the evaluation of records and JWTs.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local NOW = 1767225600  -- 2026-01-01 00:00:00 UTC
local M, H, D = 60, 3600, 86400

-- The examples of the Arvados admin page "Automatic logout and token
-- expiration": a 5-minute idle timeout, a 12h TokenLifetime, a 24h
-- MaxTokenLifetime.
local DOCS_EXAMPLE = { idle_timeout = "5m", login_token_lifetime = "12h", max_token_lifetime = "24h" }

local function policy(settings, compat)
  local s = {}
  for k, v in pairs(settings) do s[k] = v end
  s.compat = compat
  return assert(tp.policy(s))
end

local function copy(t, extra)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- The verdict's fields without its reasons, for exact comparison.
local function fields(v)
  local f = copy(v)
  f.reasons = nil
  return f
end

describe("policy", function()
  after_each(function() collectgarbage() end)

  it("defaults to no rules, trusted tokens, a 20m refresh window and the docs reading", function()
    assert.are.same({ max_token_lifetime = 0, login_token_lifetime = 0, idle_timeout = 0,
                      refresh_before_exp = 1200, issue_trusted_tokens = true, compat = "docs" },
                    tp.policy():settings())
    assert.are.same(tp.policy():settings(), tp.policy({}):settings())
  end)

  it("takes durations as text or whole seconds", function()
    assert.are.same({ max_token_lifetime = 86400, login_token_lifetime = 43200, idle_timeout = 300,
                      refresh_before_exp = 600, issue_trusted_tokens = false, compat = "arvados" },
                    tp.policy { max_token_lifetime = "24h", login_token_lifetime = 43200, idle_timeout = "5m",
                                refresh_before_exp = "10m", issue_trusted_tokens = false,
                                compat = "arvados" }:settings())
  end)

  it("takes zero to switch a rule off, and round-trips its settings", function()
    local p = tp.policy { max_token_lifetime = "0s", refresh_before_exp = 0 }
    assert.are.equal(0, p:settings().max_token_lifetime)
    assert.are.equal(0, p:settings().refresh_before_exp)
    local q = policy(DOCS_EXAMPLE, "arvados")
    assert.are.same(q:settings(), tp.policy(q:settings()):settings())
  end)

  it("prints its settings", function()
    assert.are.equal("tokenpolicy.Policy (compat docs): max_token_lifetime 1d, login_token_lifetime 12h, "
      .. "idle_timeout 5m, issue_trusted_tokens true, refresh_before_exp 20m", tostring(policy(DOCS_EXAMPLE)))
    assert.are.equal("tokenpolicy.Policy (compat arvados): max_token_lifetime off, login_token_lifetime off, "
      .. "idle_timeout off, issue_trusted_tokens false, refresh_before_exp off",
      tostring(tp.policy { compat = "arvados", issue_trusted_tokens = false, refresh_before_exp = 0 }))
  end)

  for _, case in ipairs {
    { { max_token_lifetime = "1 day" }, 'max_token_lifetime: invalid duration "1 day": unknown unit " day"' },
    { { idle_timeout = "" }, 'idle_timeout: invalid duration "": empty' },
    { { login_token_lifetime = "12hours" }, 'login_token_lifetime: invalid duration "12hours": unknown unit "hours"' },
    { { refresh_before_exp = "soon" }, 'refresh_before_exp: invalid duration "soon": expected a number' },
  } do
    it("returns malformed for duration text that does not parse: " .. case[2], function()
      local p, msg, code = tp.policy(case[1])
      assert.is_nil(p)
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: " .. case[2], msg)
    end)
  end

  for _, case in ipairs {
    { { max_token_lifetime = "-1h" }, "max_token_lifetime must not be negative" },
    { { login_token_lifetime = -1 }, "login_token_lifetime must not be negative" },
    { { idle_timeout = "-300ms" }, "idle_timeout must not be negative" },
    { { refresh_before_exp = -60 }, "refresh_before_exp must not be negative" },
    { { max_token_lifetime = 1.5 }, "max_token_lifetime: a number of seconds must be whole" },
    { { idle_timeout = true }, "idle_timeout: a duration is text or whole seconds, not boolean" },
    { { maximum_token_lifetime = "24h" }, "unknown option 'maximum_token_lifetime'" },
    { { MaxTokenLifetime = "24h" }, "unknown option 'MaxTokenLifetime'" },
    { { issue_trusted_tokens = "yes" }, "issue_trusted_tokens must be a boolean" },
    { { compat = "code" }, 'compat must be one of "docs", "arvados"' },
    { { "24h" }, "option names must be strings" },
    -- misuse raises even when text elsewhere in the table is malformed
    { { max_token_lifetime = "junk", idle_timeout = -1 }, "idle_timeout must not be negative" },
  } do
    it("raises on " .. case[2], function()
      assert.has_error(function() tp.policy(case[1]) end, "bad argument #1 to 'policy' (" .. case[2] .. ")")
    end)
  end

  it("raises when the settings are not a table", function()
    assert.has_error(function() tp.policy("24h") end, "bad argument #1 to 'policy' (table expected, got string)")
  end)

  it("checks self in its methods", function()
    local p = tp.policy()
    assert.has_error(function() p.evaluate({}, {}) end)
    assert.has_error(function() p.settings(io.stdout) end)
  end)
end)

describe("login_expiry", function()
  after_each(function() collectgarbage() end)

  -- Arvados' own table (UserSessionsControllerTest): TokenLifetime and the
  -- requested expiry, both relative to now, give the token's lifetime.
  for _, compat in ipairs { "docs", "arvados" } do
    for _, case in ipairs {
      { 0, 1 * H, 1 * H }, { 1 * H, 2 * H, 1 * H }, { 2 * H, 1 * H, 1 * H }, { 2 * H, nil, 2 * H }, { 0, nil, nil },
    } do
      for _, admin in ipairs { false, true } do
        it(("follows Arvados' table: TokenLifetime %s, requested %s -> %s (%s, admin %s)"):format(
          tp.format_duration(case[1]), case[2] and tp.format_duration(case[2]) or "none",
          case[3] and tp.format_duration(case[3]) or "none", compat, admin), function()
          local p = tp.policy { login_token_lifetime = case[1], compat = compat }
          local got = p:login_expiry { now = NOW, requested = case[2] and NOW + case[2], is_admin = admin }
          assert.are.equal(case[3] and NOW + case[3], got)
        end)
      end
    end
  end

  -- With MaxTokenLifetime: the readings differ for admins only.
  for _, case in ipairs {
    -- TokenLifetime, MaxTokenLifetime, requested, admin, docs, arvados
    { 12 * H, 24 * H, nil, false, 12 * H, 12 * H },
    { 12 * H, 24 * H, nil, true, 12 * H, 12 * H },
    { 0, 24 * H, nil, false, 24 * H, 24 * H },
    { 0, 24 * H, nil, true, 24 * H, 24 * H },         -- a missing expiry is clamped for admins too
    { 48 * H, 24 * H, nil, false, 24 * H, 24 * H },   -- the max wins over TokenLifetime
    { 48 * H, 24 * H, nil, true, 24 * H, 48 * H },    -- ... except, in Arvados' code, for an admin
    { 0, 24 * H, 48 * H, false, 24 * H, 24 * H },
    { 0, 24 * H, 48 * H, true, 24 * H, 48 * H },
    { 0, 24 * H, 24 * H, false, 24 * H, 24 * H },     -- exactly the max is kept
    { 0, 24 * H, 24 * H + 1, false, 24 * H, 24 * H }, -- one second more is clamped
    { 12 * H, 24 * H, 1 * H, false, 1 * H, 1 * H },
  } do
    for i, compat in ipairs { "docs", "arvados" } do
      it(("gives %s for TokenLifetime %s, MaxTokenLifetime %s, requested %s, admin %s (%s)"):format(
        tp.format_duration(case[4 + i]), tp.format_duration(case[1]), tp.format_duration(case[2]),
        case[3] and tp.format_duration(case[3]) or "none", case[4], compat), function()
        local p = tp.policy { login_token_lifetime = case[1], max_token_lifetime = case[2], compat = compat }
        assert.are.equal(NOW + case[4 + i],
          p:login_expiry { now = NOW, requested = case[3] and NOW + case[3], is_admin = case[4] })
      end)
    end
  end

  it("follows the docs example: users log in again every 12 hours", function()
    for _, compat in ipairs { "docs", "arvados" } do
      local p = policy(DOCS_EXAMPLE, compat)
      assert.are.equal(NOW + 12 * H, p:login_expiry { now = NOW })
      assert.are.equal(NOW + 12 * H, p:login_expiry { now = NOW, is_admin = true })
    end
  end)

  it("takes times as ISO-8601 text", function()
    local p = tp.policy { login_token_lifetime = "12h" }
    assert.are.equal(1598326250, p:login_expiry { now = "2020-08-24 15:30:50 +0000" })
    assert.are.equal(1598326250 - 5 * H,
      p:login_expiry { now = "2020-08-24T15:30:50Z", requested = "2020-08-24T22:30:50Z" })
  end)

  it("uses the clock without now", function()
    local before = os.time()
    local got = tp.policy { login_token_lifetime = 60 }:login_expiry {}
    assert.is_true(got >= before + 60 and got <= os.time() + 60)
  end)

  it("returns malformed for a time that does not parse", function()
    local v, msg, code = tp.policy():login_expiry { now = NOW, requested = "tomorrow" }
    assert.is_nil(v)
    assert.are.equal("malformed", code)
    assert.are.equal('malformed: requested: invalid time "tomorrow": not an ISO-8601 date and time', msg)
  end)

  it("raises on misuse", function()
    local p = tp.policy()
    assert.has_error(function() p:login_expiry { now = NOW, admin = true } end,
      "bad argument #1 to 'login_expiry' (unknown option 'admin')")
    assert.has_error(function() p:login_expiry { is_admin = 1 } end,
      "bad argument #1 to 'login_expiry' (is_admin must be a boolean)")
    assert.has_error(function() p:login_expiry { requested = {} } end,
      "bad argument #1 to 'login_expiry' (requested: a time is an integer or ISO-8601 text, not table)")
    assert.has_error(function() p:login_expiry() end,
      "bad argument #1 to 'login_expiry' (table expected, got no value)")
  end)
end)

describe("clamp", function()
  after_each(function() collectgarbage() end)

  -- MaxTokenLifetime 24h.  expires_at relative to now (nil: none), then
  -- the result in each reading.
  for _, case in ipairs {
    -- kind, admin, expires_at, docs, arvados
    { "api", false, nil, 24 * H, 24 * H },
    { "api", false, 24 * H, 24 * H, 24 * H },
    { "api", false, 24 * H + 1, 24 * H, 24 * H },
    { "api", false, 30 * D, 24 * H, 24 * H },
    { "api", false, 1 * H, 1 * H, 1 * H },
    { "api", false, -1 * H, -1 * H, -1 * H },     -- an expiry in the past is left alone
    { "api", true, 48 * H, 48 * H, 48 * H },      -- admins may go beyond the max
    { "api", true, nil, nil, 24 * H },            -- ... docs: even without expiry; code: not
    { "container", false, nil, nil, 24 * H },     -- docs: containers are exempt; code: not
    { "container", false, 48 * H, 48 * H, 24 * H },
    { "container", true, 48 * H, 48 * H, 48 * H },
    { "container", true, nil, nil, 24 * H },
    { "login", false, 48 * H, 24 * H, 24 * H },
    { "login", true, 48 * H, 24 * H, 48 * H },    -- the max wins over an admin's login (docs)
    { "login", true, nil, 24 * H, 24 * H },
    { "system_root", false, nil, nil, nil },      -- configuration, not a record
    { "system_root", true, 48 * H, 48 * H, 48 * H },
    { "anonymous", false, nil, nil, nil },
  } do
    for i, compat in ipairs { "docs", "arvados" } do
      local want = case[3 + i]
      it(("gives %s for a %s token%s expiring %s (%s)"):format(
        want and "now + " .. tp.format_duration(want) or "no expiry", case[1], case[2] and " of an admin" or "",
        case[3] and "at now + " .. tp.format_duration(case[3]) or "never", compat), function()
        local p = tp.policy { max_token_lifetime = "24h", compat = compat }
        assert.are.equal(want and NOW + want,
          p:clamp { now = NOW, expires_at = case[3] and NOW + case[3], is_admin = case[2], kind = case[1] })
      end)
    end
  end

  it("leaves every expiry alone without MaxTokenLifetime", function()
    for _, compat in ipairs { "docs", "arvados" } do
      local p = tp.policy { login_token_lifetime = "12h", compat = compat }
      assert.is_nil(p:clamp { now = NOW })
      assert.are.equal(NOW + 30 * D, p:clamp { now = NOW, expires_at = NOW + 30 * D, kind = "login" })
    end
  end)

  it("treats tokenpolicy.null as no expiry and defaults to the api kind", function()
    local p = tp.policy { max_token_lifetime = "24h" }
    assert.are.equal(NOW + 24 * H, p:clamp { now = NOW, expires_at = tp.null })
  end)

  it("raises on misuse", function()
    local p = tp.policy { max_token_lifetime = "24h" }
    assert.has_error(function() p:clamp { now = NOW, kind = "robot" } end,
      "bad argument #1 to 'clamp' (kind must be one of \"api\", \"login\", \"container\", \"system_root\", "
        .. "\"anonymous\")")
    assert.has_error(function() p:clamp { now = NOW, is_admin = "yes" } end,
      "bad argument #1 to 'clamp' (is_admin must be a boolean)")
    assert.has_error(function() p:clamp { now = NOW, expires = NOW } end,
      "bad argument #1 to 'clamp' (unknown option 'expires')")
    assert.has_error(function() p:clamp { now = true } end,
      "bad argument #1 to 'clamp' (now: a time is an integer or ISO-8601 text, not boolean)")
  end)
end)

describe("times", function()
  after_each(function() collectgarbage() end)

  -- Without a max, clamp returns the expiry as read: a window on the parser.
  local function read(text)
    return tp.policy():clamp { now = 0, expires_at = text }
  end

  for _, case in ipairs {
    { "2020-08-25T03:30:50Z", 1598326250 },
    { "2020-08-25 03:30:50 +0000", 1598326250 },   -- Ruby's Time#to_s, as the rake task prints
    { "2020-08-25 03:30:50 UTC", 1598326250 },
    { "2020-08-25t03:30:50z", 1598326250 },
    { "2020-08-25T03:30:50.999999999Z", 1598326250 }, -- fractions are dropped
    { "2020-08-25T03:30:50,5Z", 1598326250 },
    { "2020-08-25 03:30:50.5+00", 1598326250 },     -- PostgreSQL
    { "2020-08-25T05:30:50+02:00", 1598326250 },
    { "2020-08-25T05:30:50+0200", 1598326250 },
    { "2020-08-24T22:30:50-05:00", 1598326250 },
    { "2020-08-25T09:00:50+05:30", 1598326250 },
    { "2020-08-25 05:30:50 +02", 1598326250 },
    { "1970-01-01T00:00:00Z", 0 },
    { "1969-12-31T23:59:59Z", -1 },
    { "2000-02-29T00:00:00Z", 951782400 },
    { "2100-03-01T00:00:00Z", 4107542400 },
    { "0000-03-01T00:00:00Z", -62162035200 },
    { "9999-12-31T23:59:59Z", 253402300799 },
    { "2016-12-31T23:59:60Z", 1483228800 },          -- a leap second
  } do
    it(("reads %q as %d"):format(case[1], case[2]), function()
      assert.are.equal(case[2], read(case[1]))
    end)
  end

  for _, case in ipairs {
    { "2020-08-25T03:30:50", "no time zone (add Z for UTC)" },
    { "2020-08-25 03:30:50 ", "no time zone (add Z for UTC)" },
    { "2020-02-30T00:00:00Z", "out of range" },
    { "2100-02-29T00:00:00Z", "out of range" },
    { "2020-13-01T00:00:00Z", "out of range" },
    { "2020-00-01T00:00:00Z", "out of range" },
    { "2020-08-25T24:00:00Z", "out of range" },
    { "2020-08-25T03:60:00Z", "out of range" },
    { "2020-08-25T03:30:50+2400", "not a time zone offset" },
    { "2020-08-25T03:30:50+0260", "not a time zone offset" },
    { "2020-08-25T03:30:50+1", "not a time zone offset" },
    { "2020-08-25T03:30:50.Z", "not an ISO-8601 date and time" },
    { "2020-08-25T03:30:50Z junk", "not an ISO-8601 date and time" },
    { "2020-08-25", "not an ISO-8601 date and time" },
    { "2020/08/25 03:30:50Z", "not an ISO-8601 date and time" },
    { "yesterday", "not an ISO-8601 date and time" },
    { "1598326250", "not an ISO-8601 date and time" },
  } do
    it(("refuses %q: %s"):format(case[1], case[2]), function()
      local v, msg, code = read(case[1])
      assert.is_nil(v)
      assert.are.equal("malformed", code)
      assert.are.equal(('malformed: expires_at: invalid time "%s": %s'):format(case[1], case[2]), msg)
    end)
  end

  it("takes floats, rounded down", function()
    assert.are.equal(1598326250, read(1598326250.9))
    assert.are.equal(-2, read(-1.5))
  end)
end)

describe("evaluate", function()
  after_each(function() collectgarbage() end)

  local function verdict(state, f)
    f = f or {}
    f.ok = state == "valid"
    f.state = state
    if f.refresh_due == nil then f.refresh_due = false end
    if f.can_manage_tokens == nil then f.can_manage_tokens = true end
    return f
  end

  -- Records under the docs example policy (max 24h, TokenLifetime 12h,
  -- idle 5m, refresh window 20m), in each reading; times relative to NOW.
  -- Each case: name, record, docs verdict, arvados verdict (same if nil),
  -- number of reasons.
  local cases = {
    { "an api token well within its life",
      { created_at = -1 * H, expires_at = 2 * H, kind = "api" },
      verdict("valid", { expires_at = 2 * H, remaining = 2 * H }), nil, 0 },
    { "a token expiring exactly now (valid only while strictly later)",
      { created_at = -1 * H, expires_at = 0 },
      verdict("expired", { expires_at = 0, remaining = 0 }), nil, 1 },
    { "a token expiring a second from now",
      { created_at = -1 * H, expires_at = 1 },
      verdict("valid", { expires_at = 1, remaining = 1, refresh_due = true }), nil, 1 },
    { "a token at the edge of the refresh window",
      { created_at = -1 * H, expires_at = 20 * M },
      verdict("valid", { expires_at = 20 * M, remaining = 20 * M }), nil, 0 },
    { "a token a second inside the refresh window",
      { created_at = -1 * H, expires_at = 20 * M - 1 },
      verdict("valid", { expires_at = 20 * M - 1, remaining = 20 * M - 1, refresh_due = true }), nil, 1 },
    { "a token of exactly the max lifetime",
      { created_at = -1 * H, expires_at = 23 * H },
      verdict("valid", { expires_at = 23 * H, remaining = 23 * H }), nil, 0 },
    { "a token a second over the max lifetime",
      { created_at = -1 * H, expires_at = 23 * H + 1 },
      verdict("exceeds_max_lifetime", { expires_at = 23 * H, remaining = 23 * H, fix_expires_at = 23 * H }), nil, 1 },
    { "an old token without expiry",
      { created_at = -3 * D, expires_at = "null" },
      verdict("no_expiry", { expires_at = -2 * D, remaining = 0, fix_expires_at = 0 }), nil, 1 },
    { "a token without expiry or creation time",
      { expires_at = "null" },
      verdict("no_expiry", { fix_expires_at = 24 * H }), nil, 1 },
    { "a token without creation time, the max left",
      { expires_at = 24 * H },
      verdict("valid", { expires_at = 24 * H, remaining = 24 * H }), nil, 0 },
    { "a token without creation time, a second more than the max left",
      { expires_at = 24 * H + 1 },
      verdict("exceeds_max_lifetime", { expires_at = 24 * H + 1, remaining = 24 * H + 1, fix_expires_at = 24 * H }),
      nil, 1 },
    { "an admin's api token without expiry",
      { created_at = -1 * H, owner_is_admin = true },
      verdict("valid", {}),
      verdict("no_expiry", { expires_at = 23 * H, remaining = 23 * H, fix_expires_at = 23 * H }), { 0, 1 } },
    { "an admin's api token beyond the max",
      { created_at = -1 * H, expires_at = 30 * D, owner_is_admin = true },
      verdict("valid", { expires_at = 30 * D, remaining = 30 * D }), nil, 0 },
    { "a container token without expiry",
      { created_at = -1 * H, kind = "container" },
      verdict("valid", {}),
      verdict("no_expiry", { expires_at = 23 * H, remaining = 23 * H, fix_expires_at = 23 * H }), { 0, 1 } },
    { "a container token beyond the max",
      { created_at = -1 * H, expires_at = 30 * D, kind = "container" },
      verdict("valid", { expires_at = 30 * D, remaining = 30 * D }),
      verdict("exceeds_max_lifetime", { expires_at = 23 * H, remaining = 23 * H, fix_expires_at = 23 * H }),
      { 0, 1 } },
    { "a login token of 12h, used a minute ago",
      { created_at = -1 * H, expires_at = 11 * H, last_used_at = -1 * M, kind = "login" },
      verdict("valid", { expires_at = 11 * H, remaining = 11 * H, idle_warning_at = 3 * M }), nil, 0 },
    { "a login token of 24h (longer than TokenLifetime)",
      { created_at = -1 * H, expires_at = 23 * H, last_used_at = 0, kind = "login" },
      verdict("exceeds_max_lifetime", { expires_at = 11 * H, remaining = 11 * H, fix_expires_at = 11 * H,
                                        idle_warning_at = 4 * M }), nil, 1 },
    { "a login token idle for exactly the timeout",
      { created_at = -1 * H, expires_at = 11 * H, last_used_at = -5 * M, kind = "login" },
      verdict("idle", { expires_at = 11 * H, remaining = 11 * H, idle_warning_at = -1 * M }), nil, 1 },
    { "a login token idle for a second less than the timeout",
      { created_at = -1 * H, expires_at = 11 * H, last_used_at = -5 * M + 1, kind = "login" },
      verdict("valid", { expires_at = 11 * H, remaining = 11 * H, idle_warning_at = -1 * M + 1 }), nil, 0 },
    { "a login token never used since its creation 6 minutes ago",
      { created_at = -6 * M, expires_at = 12 * H - 6 * M, kind = "login" },
      verdict("idle", { expires_at = 12 * H - 6 * M, remaining = 12 * H - 6 * M, idle_warning_at = -2 * M }), nil, 1 },
    { "an idle login token without expiry",
      { created_at = -1 * H, last_used_at = -1 * H, kind = "login" },
      verdict("idle", { expires_at = 11 * H, remaining = 11 * H, idle_warning_at = -56 * M,
                        fix_expires_at = 11 * H }), nil, 2 },
    { "an expired login token (only the expiry matters then)",
      { created_at = -13 * H, expires_at = -1 * H, last_used_at = -2 * H, kind = "login" },
      verdict("expired", { expires_at = -1 * H, remaining = 0, idle_warning_at = -2 * H + 4 * M }), nil, 1 },
    { "an api token long unused (idle is Workbench's, for logins)",
      { created_at = -1 * H, expires_at = 2 * H, last_used_at = -1 * H },
      verdict("valid", { expires_at = 2 * H, remaining = 2 * H }), nil, 0 },
    { "the system root token (configuration, not a record) without expiry",
      { created_at = -3 * D, kind = "system_root" },
      verdict("valid", {}), nil, 0 },
    { "the anonymous token (configuration, not a record) without expiry",
      { created_at = -3 * D, kind = "anonymous" },
      verdict("valid", { can_manage_tokens = false }), nil, 0 },
    { "a saved token of the system root user without expiry (only the configured token is exempt)",
      { created_at = -3 * D, owner_uuid = "zzzzz-tpzed-000000000000000" },
      verdict("no_expiry", { expires_at = -2 * D, remaining = 0, fix_expires_at = 0 }), nil, 1 },
    { "a saved token of the anonymous user without expiry",
      { created_at = -3 * D, owner_uuid = "zzzzz-tpzed-anonymouspublic" },
      verdict("no_expiry", { expires_at = -2 * D, remaining = 0, fix_expires_at = 0 }), nil, 1 },
    { "a token scoped to all",
      { created_at = -1 * H, expires_at = 2 * H, scopes = { "all" } },
      verdict("valid", { expires_at = 2 * H, remaining = 2 * H }), nil, 0 },
    { "a token whose scopes only read",
      { created_at = -1 * H, expires_at = 2 * H, scopes = { "GET /" } },
      verdict("valid", { expires_at = 2 * H, remaining = 2 * H, can_manage_tokens = false }), nil, 0 },
    { "a token scoped to creating tokens",
      { created_at = -1 * H, expires_at = 2 * H, scopes = { "GET /", "POST /arvados/v1/api_client_authorizations" } },
      verdict("valid", { expires_at = 2 * H, remaining = 2 * H }), nil, 0 },
    { "a token scoped to a prefix that covers creating tokens",
      { created_at = -1 * H, expires_at = 2 * H, scopes = { "POST /arvados/v1/" } },
      verdict("valid", { expires_at = 2 * H, remaining = 2 * H }), nil, 0 },
    { "a token scoped to a path below the tokens endpoint",
      { created_at = -1 * H, expires_at = 2 * H, scopes = { "POST /arvados/v1/api_client_authorizations/" } },
      verdict("valid", { expires_at = 2 * H, remaining = 2 * H, can_manage_tokens = false }), nil, 0 },
    { "a token with no scopes at all",
      { created_at = -1 * H, expires_at = 2 * H, scopes = {} },
      verdict("valid", { expires_at = 2 * H, remaining = 2 * H, can_manage_tokens = false }), nil, 0 },
  }

  local function absolute(t)
    local r = {}
    for k, v in pairs(t) do
      if v == "null" then r[k] = tp.null
      elseif math.type(v) == "integer" and k ~= "remaining" then r[k] = NOW + v
      else r[k] = v end
    end
    return r
  end

  for _, case in ipairs(cases) do
    for i, compat in ipairs { "docs", "arvados" } do
      it(("judges %s (%s)"):format(case[1], compat), function()
        local want = absolute(case[2 + i] or case[3])
        local v = policy(DOCS_EXAMPLE, compat):evaluate(absolute(case[2]), NOW)
        assert.are.same(want, fields(v))
        assert.are.equal(type(case[5]) == "table" and case[5][i] or case[5], #v.reasons)
        for _, reason in ipairs(v.reasons) do assert.are.equal("string", type(reason)) end
      end)
    end
  end

  it("explains each finding in a sentence", function()
    local p = policy(DOCS_EXAMPLE)
    local function reasons(record) return p:evaluate(absolute(record), NOW).reasons end
    assert.are.same({ "expired at 2025-12-31 23:00:00 UTC (1h ago): create a new token" },
      reasons { expires_at = -1 * H })
    assert.are.same({ "expired at 2025-12-31 23:00:00 UTC (1h ago): log in again" },
      reasons { expires_at = -1 * H, kind = "login" })
    assert.are.same({ "lasts 30d from its creation at 2025-12-31 23:00:00 UTC, longer than the maximum token "
      .. "lifetime (API.MaxTokenLifetime) of 1d: set expires_at to 2026-01-01 23:00:00 UTC" },
      reasons { created_at = -1 * H, expires_at = 30 * D - 1 * H })
    assert.are.same({ "lasts 1d from its creation at 2025-12-31 23:00:00 UTC, longer than the login token "
      .. "lifetime (Login.TokenLifetime) of 12h: set expires_at to 2026-01-01 11:00:00 UTC" },
      reasons { created_at = -1 * H, expires_at = 23 * H, kind = "login", last_used_at = 0 })
    assert.are.same({ "expires in 2d, more than the maximum token lifetime (API.MaxTokenLifetime) of 1d from now: "
      .. "set expires_at to 2026-01-02 00:00:00 UTC" }, reasons { expires_at = 2 * D })
    assert.are.same({ "never expires, but the maximum token lifetime (API.MaxTokenLifetime) is 1d: "
      .. "set expires_at to 2026-01-01 00:00:00 UTC" }, reasons { created_at = -3 * D })
    assert.are.same({
      "unused since 2025-12-31 23:00:00 UTC (1h ago), longer than the 5m idle timeout (Workbench.IdleTimeout): "
        .. "Workbench logs such a session out; revoke the token",
      "never expires, but the login token lifetime (Login.TokenLifetime) is 12h: "
        .. "set expires_at to 2026-01-01 11:00:00 UTC",
    }, reasons { created_at = -1 * H, last_used_at = -1 * H, kind = "login" })
    assert.are.same({ "expires in 10m, within the 20m refresh window: refresh it now" },
      reasons { expires_at = 10 * M })
  end)

  it("lets untrusted login tokens manage no tokens (docs), and no token but the root's (arvados)", function()
    for _, case in ipairs {
      { "login", true, false, false }, { "api", true, true, false }, { "container", true, true, false },
      { "system_root", true, true, true }, { "anonymous", false, false, false },
    } do
      for i, compat in ipairs { "docs", "arvados" } do
        local p = tp.policy { issue_trusted_tokens = false, compat = compat }
        local v = p:evaluate({ kind = case[1] }, NOW)
        assert.are.equal(case[2 + i], v.can_manage_tokens, case[1] .. " " .. compat)
        v = tp.policy { compat = compat }:evaluate({ kind = case[1] }, NOW)
        assert.are.equal(case[2], v.can_manage_tokens, case[1] .. " trusted " .. compat)
      end
    end
  end)

  it("keeps an admin's login beyond the max only in the arvados reading", function()
    local settings = { login_token_lifetime = "48h", max_token_lifetime = "24h" }
    local record = { created_at = NOW - H, expires_at = NOW + 47 * H, kind = "login", owner_is_admin = true }
    local docs = policy(settings, "docs"):evaluate(record, NOW)
    assert.are.equal("exceeds_max_lifetime", docs.state)
    assert.are.equal(NOW + 23 * H, docs.expires_at)
    local code = policy(settings, "arvados"):evaluate(record, NOW)
    assert.are.equal("valid", code.state)
    assert.are.equal(NOW + 47 * H, code.expires_at)
  end)

  it("warns min(60, idle) seconds before an idle logout", function()
    for _, case in ipairs { { 300, 240 }, { 60, 0 }, { 30, 0 }, { 1, 0 } } do
      local v = tp.policy { idle_timeout = case[1] }:evaluate({ kind = "login", last_used_at = NOW }, NOW)
      assert.are.equal(NOW + case[2], v.idle_warning_at)
    end
  end)

  it("reads ISO-8601 times, tokenpolicy.null, and now as text", function()
    local p = policy(DOCS_EXAMPLE)
    local v = p:evaluate({ created_at = "2025-12-31T23:00:00Z", expires_at = "2026-01-01 02:00:00 +0000",
                           last_used_at = tp.null, scopes = tp.null, kind = tp.null, owner_is_admin = tp.null },
                         "2026-01-01T00:00:00Z")
    assert.are.same(verdict("valid", { expires_at = NOW + 2 * H, remaining = 2 * H }), fields(v))
  end)

  it("ignores fields it does not know, as records come whole from stores", function()
    local v = policy(DOCS_EXAMPLE):evaluate({ uuid = "zzzzz-gj3su-0123456789abcde", api_token = "secret",
      created_at = NOW - H, expires_at = NOW + 2 * H, [1] = "x", [true] = 1 }, NOW)
    assert.are.equal("valid", v.state)
  end)

  it("reads claims only from a table without record times", function()
    local p = policy(DOCS_EXAMPLE)
    assert.are.equal("expired", p:evaluate({ exp = NOW }, NOW).state)
    assert.are.equal("expired", p:evaluate({ claims = { exp = NOW }, expires_at = NOW + H }, NOW).state)
    local v = p:evaluate({ exp = NOW, created_at = NOW - H }, NOW)  -- a record: exp is no record field
    assert.are.equal("no_expiry", v.state)
    assert.are.equal(NOW + 23 * H, v.expires_at)
    assert.are.equal("no_expiry", p:evaluate({ exp = NOW, expires_at = tp.null }, NOW).state)
  end)

  it("uses the clock without now", function()
    local v = tp.policy():evaluate({ expires_at = os.time() + 100 })
    assert.is_true(v.remaining <= 100 and v.remaining >= 99)
  end)

  describe("on JWTs", function()
    local key = assert(tp.keys('{"kty":"oct","k":"' .. tp.b64url_encode(("k"):rep(32)) .. '"}'))
    local function jwt(claims)
      return assert(tp.decode(tp.sign(absolute(claims), key, { alg = "HS256" })))
    end

    for _, case in ipairs {
      { "an access token of an hour", { iat = -30 * M, exp = 30 * M },
        verdict("valid", { expires_at = 30 * M, remaining = 30 * M }) },
      { "a token issued for exactly the max", { iat = -1 * H, exp = 23 * H },
        verdict("valid", { expires_at = 23 * H, remaining = 23 * H }) },
      { "a token issued for a second more than the max", { iat = -1 * H, exp = 23 * H + 1 },
        verdict("exceeds_max_lifetime", { expires_at = 23 * H, remaining = 23 * H }) },
      { "a token without iat and the max left", { exp = 24 * H },
        verdict("valid", { expires_at = 24 * H, remaining = 24 * H }) },
      { "a token without iat and a second more than the max left", { exp = 24 * H + 1 },
        verdict("exceeds_max_lifetime", { expires_at = 24 * H + 1, remaining = 24 * H + 1 }) },
      { "a token without exp", { iat = -1 * H },
        verdict("no_expiry", { expires_at = 23 * H, remaining = 23 * H }) },
      { "a token expiring now", { iat = -1 * H, exp = 0 },
        verdict("expired", { expires_at = 0, remaining = 0 }) },
      { "a token valid from now", { nbf = 0, exp = 1 * H },
        verdict("valid", { expires_at = 1 * H, remaining = 1 * H }) },
      { "a token valid from a second from now", { nbf = 1, exp = 1 * H },
        verdict("not_yet_valid", { expires_at = 1 * H, remaining = 1 * H }) },
      { "a token of a login session that began 12h ago", { auth_time = -12 * H, iat = -1 * M, exp = 59 * M },
        verdict("expired", { expires_at = 0, remaining = 0 }) },
      { "a token of a login session a second younger", { auth_time = -12 * H + 1, iat = -1 * M, exp = 59 * M },
        verdict("valid", { expires_at = 1, remaining = 1, refresh_due = true }) },
    } do
      it("judges " .. case[1], function()
        local v = policy(DOCS_EXAMPLE):evaluate(jwt(case[2]), NOW)
        assert.are.same(absolute(case[3]), fields(v))
        assert.are.equal(v.ok and (v.refresh_due and 1 or 0) or 1, #v.reasons)
      end)
    end

    it("explains JWT findings for the issuer", function()
      local p = policy(DOCS_EXAMPLE)
      assert.are.same({ "issued for 2d (iat to exp), longer than the maximum token lifetime (API.MaxTokenLifetime) "
        .. "of 1d: have the issuer limit its tokens to 1d" },
        p:evaluate(jwt { iat = 0, exp = 2 * D }, NOW).reasons)
      assert.are.same({ "has no exp claim, but the maximum token lifetime (API.MaxTokenLifetime) is 1d: "
        .. "have the issuer set exp" }, p:evaluate(jwt { iat = 0 }, NOW).reasons)
      assert.are.same({ "not valid before 2026-01-01 00:05:00 UTC (in 5m): wait, or check the clocks of the "
        .. "issuer and this host" }, p:evaluate(jwt { nbf = 5 * M, exp = H }, NOW).reasons)
      assert.are.same({ "the login session began at 2025-12-31 11:00:00 UTC, 13h ago, and the login token lifetime "
        .. "(Login.TokenLifetime) is 12h: log in again" },
        p:evaluate(jwt { auth_time = -13 * H, exp = H }, NOW).reasons)
    end)

    it("takes a claims table as verify returns it", function()
      local claims = assert(tp.verify(tp.sign({ iat = NOW - H, exp = NOW + 2 * D }, key, { alg = "HS256" }), key,
        { algs = { "HS256" }, now = NOW }))
      local v = policy(DOCS_EXAMPLE):evaluate(claims, NOW)
      assert.are.equal("exceeds_max_lifetime", v.state)
      assert.are.equal(NOW + 23 * H, v.expires_at)
    end)

    it("rounds fractional claims the strict way", function()
      local v = tp.policy():evaluate({ claims = { exp = NOW + 0.5, nbf = NOW + 0.5 } }, NOW)
      assert.are.equal("not_yet_valid", v.state)  -- nbf rounds up
      assert.are.equal(NOW, v.expires_at)         -- exp rounds down
    end)

    it("needs no policy to tell expiry, and no trust to manage tokens", function()
      local v = tp.policy():evaluate(jwt { exp = H }, NOW)
      assert.are.same(verdict("valid", { expires_at = H + NOW, remaining = H }), fields(v))
      assert.is_false(tp.policy { issue_trusted_tokens = false }:evaluate(jwt { exp = H }, NOW).can_manage_tokens)
    end)
  end)

  describe("with a verdict to fill in", function()
    it("returns that table, with stale fields and reasons cleared", function()
      local p = policy(DOCS_EXAMPLE)
      local target = { extra = "kept" }
      local v = p:evaluate({ created_at = NOW - 3 * D }, NOW, target)
      assert.are.equal(target, v)
      assert.are.equal("no_expiry", v.state)
      assert.are.equal(NOW, v.fix_expires_at)
      local reasons = v.reasons
      assert.are.equal(1, #reasons)
      local login = { created_at = NOW - H, expires_at = NOW + 2 * H, kind = "login", last_used_at = NOW }
      v = p:evaluate(login, NOW, target)
      assert.are.equal(target, v)
      assert.are.equal(reasons, v.reasons)
      assert.are.same({ ok = true, state = "valid", expires_at = NOW + 2 * H, remaining = 2 * H, refresh_due = false,
                        idle_warning_at = NOW + 4 * M, can_manage_tokens = true, extra = "kept" }, fields(v))
      assert.are.same({}, v.reasons)
      v = p:evaluate({ expires_at = NOW + 60 }, NOW, target)
      assert.is_nil(v.idle_warning_at)
      assert.are.equal(1, #v.reasons)
      assert.are.equal(getmetatable(p:evaluate({}, NOW)), getmetatable(v))
    end)

    it("builds no sentences when the verdict's reasons are false", function()
      local p = policy(DOCS_EXAMPLE)
      local target = { reasons = false }
      local v = p:evaluate({ created_at = NOW - 3 * D }, NOW, target)
      assert.are.same({ ok = false, state = "no_expiry", expires_at = NOW - 2 * D, remaining = 0, refresh_due = false,
                        can_manage_tokens = true, fix_expires_at = NOW, reasons = false }, copy(v))
      assert.are.equal("tokenpolicy.Verdict: no_expiry, expires 2025-12-30 00:00:00 UTC (none left), "
        .. "fix: expires_at 2026-01-01 00:00:00 UTC", tostring(v))
    end)

    it("replaces a reasons field that is not a table", function()
      local v = tp.policy():evaluate({ expires_at = NOW - 1 }, NOW, { reasons = "none" })
      assert.are.equal(1, #v.reasons)
    end)

    local function growth(p, record, target)
      p:evaluate(record, NOW, target)
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      for _ = 1, 1000 do p:evaluate(record, NOW, target) end
      local grown = collectgarbage("count") - before
      collectgarbage("restart")
      return grown
    end

    it("allocates nothing per token once warmed up", function()
      local p = policy(DOCS_EXAMPLE)
      local record = { created_at = NOW - H, expires_at = NOW + 2 * H, kind = "api", scopes = { "all" } }
      local grown = growth(p, record, {})
      assert.is_true(grown < 1, ("grew by %.2f KiB"):format(grown))
      -- a token with findings: only its sentences, unless reasons = false
      grown = growth(p, { created_at = NOW - 3 * D }, {})
      assert.is_true(grown > 50, ("grew by %.2f KiB"):format(grown))
      grown = growth(p, { created_at = NOW - 3 * D }, { reasons = false })
      assert.is_true(grown < 1, ("grew by %.2f KiB"):format(grown))
    end)
  end)

  it("prints a verdict readably", function()
    local p = policy(DOCS_EXAMPLE)
    assert.are.equal("tokenpolicy.Verdict: valid, expires 2026-01-01 11:00:00 UTC (11h left), "
      .. "idle warning at 2026-01-01 00:04:00 UTC",
      tostring(p:evaluate({ created_at = NOW - H, expires_at = NOW + 11 * H, kind = "login", last_used_at = NOW },
                          NOW)))
    assert.are.equal("tokenpolicy.Verdict: no_expiry, expires 2025-12-30 00:00:00 UTC (none left), "
      .. "fix: expires_at 2026-01-01 00:00:00 UTC\n"
      .. "  - never expires, but the maximum token lifetime (API.MaxTokenLifetime) is 1d: "
      .. "set expires_at to 2026-01-01 00:00:00 UTC",
      tostring(p:evaluate({ created_at = NOW - 3 * D }, NOW)))
    assert.are.equal("tokenpolicy.Verdict: valid, never expires, cannot manage tokens",
      tostring(tp.policy { issue_trusted_tokens = false }:evaluate({ kind = "login" }, NOW)))
    assert.are.equal("tokenpolicy.Verdict: valid, expires 2026-01-01 00:10:00 UTC (10m left), refresh due\n"
      .. "  - expires in 10m, within the 20m refresh window: refresh it now",
      tostring(p:evaluate({ expires_at = NOW + 10 * M }, NOW)))
  end)

  for _, case in ipairs {
    { { expires_at = "soon" }, 'expires_at: invalid time "soon": not an ISO-8601 date and time' },
    { { created_at = "2026-01-01T00:00:00" },
      'created_at: invalid time "2026-01-01T00:00:00": no time zone (add Z for UTC)' },
    { { last_used_at = true }, "last_used_at: a time is an integer or ISO-8601 text, not boolean" },
    { { expires_at = {} }, "expires_at: a time is an integer or ISO-8601 text, not table" },
    { { expires_at = 0 / 0 }, "expires_at: a number out of range" },
    { { created_at = 1e300 }, "created_at: a number out of range" },
    { { kind = "robot" }, 'kind: unknown kind "robot"' },
    { { kind = 1 }, "kind: not a string" },
    { { kind = "login\0" }, 'kind: unknown kind "login?"' },
    { { owner_is_admin = "yes" }, "owner_is_admin: not a boolean" },
    { { scopes = "all" }, "scopes: not a list of strings" },
    { { scopes = { "all", 1 } }, "scopes: not a list of strings" },
    { { claims = { exp = "tomorrow" } }, "claim exp is not a number" },
    { { claims = { iat = 1e300 } }, "claim iat is out of range" },
  } do
    it("returns malformed for a token whose " .. case[2], function()
      local v, msg, code = policy(DOCS_EXAMPLE):evaluate(case[1], NOW)
      assert.is_nil(v)
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: " .. case[2], msg)
    end)
  end

  it("returns malformed for now text that does not parse", function()
    local v, msg, code = tp.policy():evaluate({}, "now")
    assert.is_nil(v)
    assert.are.equal("malformed", code)
    assert.are.equal('malformed: now: invalid time "now": not an ISO-8601 date and time', msg)
  end)

  it("raises on misuse", function()
    local p = tp.policy()
    assert.has_error(function() p:evaluate(true) end,
      "bad argument #1 to 'evaluate' (table or string expected, got boolean)")
    assert.has_error(function() p:evaluate({}, {}) end,
      "bad argument #2 to 'evaluate' (now: a time is an integer or ISO-8601 text, not table)")
    assert.has_error(function() p:evaluate({}, NOW, 5) end,
      "bad argument #3 to 'evaluate' (table expected, got number)")
  end)
end)

describe("long_lived", function()
  after_each(function() collectgarbage() end)

  it("selects like the rake tasks: no expiry, or later than now + lifetime", function()
    for _, compat in ipairs { "docs", "arvados" } do
      local p = tp.policy { max_token_lifetime = "24h", login_token_lifetime = "12h", compat = compat }
      for _, case in ipairs {
        { {}, true },
        { { expires_at = tp.null }, true },
        { { expires_at = NOW + 24 * H }, false },
        { { expires_at = NOW + 24 * H + 1 }, true },
        { { expires_at = NOW - 1 }, false },
        { { expires_at = NOW + 30 * D, owner_uuid = "zzzzz-tpzed-5vzt5wc62k46p6r" }, true },
        { { expires_at = NOW + 30 * D, owner_uuid = "zzzzz-tpzed-000000000000000" }, false },
        { { owner_uuid = "zzzzz-tpzed-000000000000000" }, false },
        { { owner_uuid = "zzzzz-tpzed-anonymouspublic" }, false },
        { { owner_uuid = "zzzzz-tpzed-000000000000000x" }, false },  -- the rake's regexp is unanchored
        { { owner_uuid = "zzzzz-tpzed-00000000000000" }, true },
        { { owner_uuid = "zzzzz-tpzed-5vzt5wc62k46p6r", owner_is_admin = true, kind = "container" }, true },
        { { claims = { exp = NOW + 2 * D } }, true },
      } do
        local selected, until_ = p:long_lived(case[1], NOW)
        assert.are.equal(case[2], selected)
        assert.are.equal(NOW + 24 * H, until_)
      end
    end
  end)

  it("uses TokenLifetime when MaxTokenLifetime is off", function()
    local p = tp.policy { login_token_lifetime = "12h" }
    assert.are.same({ false, NOW + 12 * H }, { p:long_lived({ expires_at = NOW + 12 * H }, NOW) })
    assert.are.same({ true, NOW + 12 * H }, { p:long_lived({ expires_at = NOW + 12 * H + 1 }, NOW) })
  end)

  it("sets tokens to what the fix task of the docs example prints", function()
    -- "Setting token expiration to: 2020-08-25 03:30:50 +0000", with TokenLifetime 12h
    local p = tp.policy { login_token_lifetime = "12h" }
    local selected, until_ = p:long_lived({ expires_at = tp.null }, "2020-08-24 15:30:50 +0000")
    assert.is_true(selected)
    assert.are.equal(tp.policy():clamp { expires_at = "2020-08-25 03:30:50 +0000" }, until_)
  end)

  it("finds the docs example's 6 long-lived tokens from 3 users", function()
    local p = tp.policy { login_token_lifetime = "12h" }
    local user2, admin, user1 = "zzzzz-tpzed-5vzt5wc62k46p6r", "zzzzz-tpzed-6drplgwq9nm5cox",
      "zzzzz-tpzed-ftz2tfurbpf7xox"
    local tokens = {
      { owner_uuid = user2 }, { owner_uuid = admin, owner_is_admin = true }, { owner_uuid = user2 },
      { owner_uuid = "zzzzz-tpzed-000000000000000" }, { owner_uuid = user1, expires_at = NOW + H },
      { owner_uuid = user1, expires_at = "2027-01-01T00:00:00Z" }, { owner_uuid = admin },
      { owner_uuid = "zzzzz-tpzed-anonymouspublic" }, { owner_uuid = user1 },
    }
    local count, users, seen = 0, {}, {}
    for _, t in ipairs(tokens) do
      local selected = p:long_lived(t, NOW)
      assert.is_boolean(selected)
      if selected then
        count = count + 1
        if not seen[t.owner_uuid] then
          seen[t.owner_uuid] = true
          users[#users + 1] = t.owner_uuid
        end
      end
    end
    assert.are.equal(6, count)
    assert.are.same({ user2, admin, user1 }, users)
  end)

  it("fails with Arvados' message when neither lifetime is set", function()
    for _, p in ipairs { tp.policy(), tp.policy { idle_timeout = "5m" } } do
      local v, msg, code = p:long_lived({}, NOW)
      assert.is_nil(v)
      assert.are.equal("no_policy", code)
      assert.are.equal("no_policy: No expiration policy set (API.MaxTokenLifetime nor Login.TokenLifetime is set), "
        .. "nothing to do.", msg)
    end
  end)

  it("returns malformed for a record whose times do not parse", function()
    local v, msg, code = tp.policy { max_token_lifetime = 60 }:long_lived({ expires_at = "never" }, NOW)
    assert.is_nil(v)
    assert.are.equal("malformed", code)
    assert.are.equal('malformed: expires_at: invalid time "never": not an ISO-8601 date and time', msg)
  end)
end)

describe("the guide (docs/policy.md)", function()
  it("shows what its first example prints", function()
    local p = assert(tp.policy_from_arvados { Clusters = { zzzzz = {
      API = { MaxTokenLifetime = "24h" }, Login = { TokenLifetime = "12h" }, Workbench = { IdleTimeout = "5m" } } } })
    assert.are.equal("tokenpolicy.Policy (compat docs): max_token_lifetime 1d, login_token_lifetime 12h, "
      .. "idle_timeout 5m, issue_trusted_tokens true, refresh_before_exp 20m", tostring(p))
    local v = p:evaluate({ created_at = "2026-01-01T00:00:00Z", expires_at = tp.null }, "2026-01-01T06:00:00Z")
    assert.are.equal("tokenpolicy.Verdict: no_expiry, expires 2026-01-02 00:00:00 UTC (18h left), "
      .. "fix: expires_at 2026-01-02 00:00:00 UTC\n"
      .. "  - never expires, but the maximum token lifetime (API.MaxTokenLifetime) is 1d: "
      .. "set expires_at to 2026-01-02 00:00:00 UTC", tostring(v))
  end)
end)

describe("policy_from_arvados", function()
  local dir
  before_each(function() dir = expect.new_dir() end)
  after_each(function()
    expect.remove_dir(dir)
    collectgarbage()
  end)

  local function write(name, text)
    local path = dir .. "/" .. name
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    return path
  end

  it("reads the docs example configuration", function()
    local path = write("config.yml", [[
Clusters:
  zzzzz:
    SystemRootToken: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
    API:
      MaxTokenLifetime: 24h
    Login:
      TokenLifetime: 12h
    Workbench:
      IdleTimeout: 5m
]])
    local p = assert(tp.policy_from_arvados(path))
    assert.are.same({ max_token_lifetime = 86400, login_token_lifetime = 43200, idle_timeout = 300,
                      refresh_before_exp = 1200, issue_trusted_tokens = true, compat = "docs" }, p:settings())
    assert.are.equal("arvados", assert(tp.policy_from_arvados(path, { compat = "arvados" })):settings().compat)
  end)

  it("defaults what the configuration leaves out as Arvados does", function()
    local p = assert(tp.policy_from_arvados(write("c.yml", "Clusters:\n  zzzzz:\n    ClusterID: zzzzz\n")))
    assert.are.same(tp.policy():settings(), p:settings())
    p = assert(tp.policy_from_arvados(write("d.yml", "Clusters:\n  zzzzz:\n    Login:\n      TokenLifetime:\n")))
    assert.are.equal(0, p:settings().login_token_lifetime)
  end)

  -- TrustLoginTokens was renamed before any release: Arvados ignores it.
  for _, case in ipairs {
    { "IssueTrustedTokens: false", false }, { "TrustLoginTokens: false", true },
    { "IssueTrustedTokens: true", true }, { "TrustLoginTokens: true", true },
    { "IssueTrustedTokens: false\n      TrustLoginTokens: true", false },
  } do
    it("reads " .. case[1]:gsub("\n%s*", ", "), function()
      local text = "Clusters:\n  zzzzz:\n    Login:\n      " .. case[1] .. "\n"
      local p = assert(tp.policy_from_arvados(write("t.yml", text)))
      assert.are.equal(case[2], p:settings().issue_trusted_tokens)
    end)
  end

  it("takes an already parsed configuration, without lyaml", function()
    local p = assert(tp.policy_from_arvados { Clusters = { xxxxx = {
      API = { MaxTokenLifetime = "168h" }, Login = { TokenLifetime = "1h", IssueTrustedTokens = false },
      Workbench = { IdleTimeout = "1h30m" } } } })
    assert.are.same({ max_token_lifetime = 604800, login_token_lifetime = 3600, idle_timeout = 5400,
                      refresh_before_exp = 1200, issue_trusted_tokens = false, compat = "docs" }, p:settings())
  end)

  it("needs cluster= when there are several clusters", function()
    local path = write("two.yml", "Clusters:\n  zzzzz:\n    API: {MaxTokenLifetime: 24h}\n  xxxxx:\n"
      .. "    API: {MaxTokenLifetime: 1h}\n")
    local p, msg, code = tp.policy_from_arvados(path)
    assert.is_nil(p)
    assert.are.equal("malformed", code)
    assert.are.equal("malformed: " .. path .. " has 2 clusters (xxxxx, zzzzz): choose one with {cluster = ...}", msg)
    assert.are.equal(3600, assert(tp.policy_from_arvados(path, { cluster = "xxxxx" })):settings().max_token_lifetime)
    assert.are.equal(86400, assert(tp.policy_from_arvados(path, { cluster = "zzzzz" })):settings().max_token_lifetime)
    p, msg, code = tp.policy_from_arvados(path, { cluster = "yyyyy" })
    assert.is_nil(p)
    assert.are.equal("malformed", code)
    assert.are.equal("malformed: " .. path .. " has no cluster yyyyy (it has xxxxx, zzzzz)", msg)
  end)

  for _, case in ipairs {
    { "Login:\n      TokenLifetime: 12 hours",
      'Clusters.zzzzz.Login.TokenLifetime: invalid duration "12 hours": unknown unit " hours"' },
    { "Workbench:\n      IdleTimeout: 1.5",
      "Clusters.zzzzz.Workbench.IdleTimeout: a duration is text like \"12h\", not 1.5" },
    { "Workbench:\n      IdleTimeout: [5m]",
      "Clusters.zzzzz.Workbench.IdleTimeout: a duration is text like \"12h\", not a list or mapping" },
    { "Login:\n      IssueTrustedTokens: sometimes",
      "Clusters.zzzzz.Login.IssueTrustedTokens: not true or false (sometimes)" },
    { "Login: 12h", "Clusters.zzzzz.Login is not a mapping" },
  } do
    it("returns malformed for " .. case[2], function()
      local p, msg, code = tp.policy_from_arvados(write("bad.yml", "Clusters:\n  zzzzz:\n    " .. case[1] .. "\n"))
      assert.is_nil(p)
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: " .. case[2], msg)
    end)
  end

  it("returns malformed for YAML that does not parse, without quoting it", function()
    local path = write("broken.yml", "Clusters:\n  zzzzz:\n    SystemRootToken: \"secret\n    API: [\n")
    local p, msg, code = tp.policy_from_arvados(path)
    assert.is_nil(p)
    assert.are.equal("malformed", code)
    assert.matches("^malformed: " .. path:gsub("%p", "%%%0") .. ": invalid YAML %(%d+:%d+: ", msg)
    assert.is_nil(msg:find("secret", 1, true))
  end)

  it("returns malformed without Clusters", function()
    for _, text in ipairs { "", "~\n", "Clusters:\n", "Clusters: 5\n", "- a\n- b\n" } do
      local path = write("none.yml", text)
      local p, msg, code = tp.policy_from_arvados(path)
      assert.is_nil(p)
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: " .. path .. " has no Clusters mapping", msg)
    end
  end)

  it("returns malformed for a configuration without clusters", function()
    local path = write("empty.yml", "Clusters: {}\n")
    local p, msg, code = tp.policy_from_arvados(path)
    assert.is_nil(p)
    assert.are.equal("malformed", code)
    assert.are.equal("malformed: " .. path .. " has no clusters", msg)
    p, msg = tp.policy_from_arvados(path, { cluster = "zzzzz" })
    assert.is_nil(p)
    assert.are.equal("malformed: " .. path .. " has no cluster zzzzz (it has none)", msg)
  end)

  it("returns not_found for a missing file", function()
    local p, msg, code = tp.policy_from_arvados(dir .. "/missing.yml")
    assert.is_nil(p)
    assert.are.equal("not_found", code)
    assert.are.equal("not_found: read_config: " .. dir .. "/missing.yml does not exist", msg)
  end)

  it("raises on misuse", function()
    assert.has_error(function() tp.policy_from_arvados(5) end,
      "bad argument #1 to 'policy_from_arvados' (path or table expected, got number)")
    assert.has_error(function() tp.policy_from_arvados({}, { clusters = "x" }) end,
      "bad argument #2 to 'policy_from_arvados' (unknown option 'clusters')")
    assert.has_error(function() tp.policy_from_arvados({}, { cluster = 5 }) end,
      "bad argument #2 to 'policy_from_arvados' (option 'cluster' must be string, got number)")
    assert.has_error(function() tp.policy_from_arvados({}, { compat = "code" }) end,
      "bad argument #2 to 'policy_from_arvados' (option 'compat' must be \"docs\" or \"arvados\")")
  end)
end)
