-- tokenpolicy.haproxy: the `http-request lua.tokenpolicy-auth` action, in
-- process (header parsing, options) and in Debian's real HAProxy 2.6 running
-- examples/haproxy/haproxy.cfg (spec/helpers/haproxy.lua), once with
-- lua-load and once with lua-load-per-thread, both with nbthread 2, checked
-- with curl.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"
local haproxy = require "helpers.haproxy"
local http_peer = require "helpers.http_peer"
local oidc = require "helpers.oidc"
local gateway = require "tokenpolicy.haproxy"

local ISS, AUD = "https://op.example", "api"
local RUCIO_TOKEN = "root-root-webui-0123456789abcdef0123456789abcdef"

-- Signing keys made at test time: A (RSA) is in the key file at start, B
-- (EC) replaces it, C (RSA, another key) forges signatures.
local pem_a, pem_b, pem_c
local function signers()
  if not pem_a then
    pem_a = crypto.rsa_private(2048)
    pem_b = crypto.ec_private("P-256")
    pem_c = crypto.run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048")
  end
  return assert(tp.keys(pem_a)), assert(tp.keys(pem_b)), assert(tp.keys(pem_c))
end

local serial = 0
local NONE = {}

-- A token: the claims of a valid one with `changes` applied (NONE removes).
local function token(key, changes, alg, kid)
  serial = serial + 1
  local now = os.time()
  local claims = { iss = ISS, aud = AUD, sub = "alice", scope = "read write", iat = now, exp = now + 300,
    jti = "jti-" .. serial .. "-" .. now }
  for name, value in pairs(changes or {}) do
    if value == NONE then claims[name] = nil else claims[name] = value end
  end
  return assert(tp.sign(claims, key, { alg = alg or "RS256", kid = kid })), claims
end

local function unsigned(claims)
  return tp.b64url_encode('{"alg":"none","typ":"JWT"}') .. "." .. tp.b64url_encode(tp.json_encode(claims)) .. "."
end

local function bearer(t)
  return { authorization = "Bearer " .. t }
end

local function challenge(code)
  return ('Bearer realm="api", error="invalid_token", error_description="%s"'):format(code)
end

-- Asserts a refusal with 401 and the error description `code`.
local function refused(h, code, headers)
  local status, got = haproxy.get(h, headers)
  assert.are.same({ 401, challenge(code) }, { status, got["www-authenticate"] })
end

-- Waits until every Lua state has logged `text` once more than `before` times.
local function logged_by_every_state(h, text, before)
  haproxy.wait_for("every Lua state to log: " .. text, function()
    local n = haproxy.count(h, text)
    return n >= before + h.states, ("%d of %d"):format(n - before, h.states)
  end, 15)
end

describe("tokenpolicy.haproxy in process", function()
  after_each(function() collectgarbage() end)

  describe("header_text (what may go into txn.tp.sub, .scope and .jti)", function()
    local cases = {
      { "user-17", "user-17" },
      { "openid storage.read:/data", "openid storage.read:/data" },
      { "Jos\u{e9} \u{1F600}", "Jos\u{e9} \u{1F600}" },   -- UTF-8 is kept
      { "", "" },
      { "a\r\nX-Forged: 1", nil },
      { "tab\there", nil },
      { "nul\0byte", nil },
      { "del\127", nil },
      { "\31", nil },
      { 42, nil },
      { true, nil },
      { {}, nil },
    }
    for _, case in ipairs(cases) do
      it(("gives %q for %q"):format(tostring(case[2]), tostring(case[1])), function()
        assert.are.equal(case[2], tp.header_text(case[1]))
      end)
    end
    it("gives nil for nothing", function()
      assert.is_nil(tp.header_text())
      assert.are.equal(1, select("#", tp.header_text()))
    end)
  end)

  describe("bearer", function()
    -- The action passes what bearer returns to v:check, which strips the
    -- scheme and spaces and checks the token's characters in C.
    local key = assert(tp.keys { kty = "oct", k = tp.b64url_encode(("k"):rep(32)), kid = "h" })
    local verifier = tp.verifier { keys = key, algs = "HS256", iss = ISS, aud = AUD }
    local good = assert(tp.sign({ iss = ISS, aud = AUD, sub = "alice", exp = os.time() + 300 }, key,
      { alg = "HS256" }))
    local cases = {
      -- header, value, what bearer returns, what v:check makes of it
      { "authorization", "Bearer " .. good, "Bearer " .. good, "alice" },
      { "authorization", "bearer " .. good, "bearer " .. good, "alice" },
      { "authorization", "BEARER   " .. good .. "  ", "BEARER   " .. good .. "  ", "alice" },
      { "authorization", "", nil, "missing_token" },
      { "authorization", nil, nil, "missing_token" },
      { "authorization", "Basic dXNlcjpwYXNz", nil, "missing_token" },
      { "authorization", "Bearerabc", nil, "missing_token" },
      { "authorization", "Bearer a b", "Bearer a b", "malformed" },
      { "authorization", "Bearer a=b", "Bearer a=b", "malformed" },
      { "authorization", "Bearer " .. good .. "=", "Bearer " .. good .. "=", "malformed" },
      { "authorization", "Bearer ", "Bearer ", "malformed" },
      { "x-rucio-auth-token", good, good, "alice" },
      { "x-rucio-auth-token", "  " .. good .. " ", "  " .. good .. " ", "alice" },
      { "x-rucio-auth-token", RUCIO_TOKEN, RUCIO_TOKEN, "malformed" },
      { "x-rucio-auth-token", "   ", nil, "missing_token" },
      { "x-rucio-auth-token", "", nil, "missing_token" },
    }
    for _, case in ipairs(cases) do
      local shown = tostring(case[2]):gsub("eyJ[%w%-_%.]+", "<token>")
      it(("takes %s: %q -> %s"):format(case[1], shown, case[4]), function()
        local credentials, code = gateway.bearer(case[2], case[1])
        assert.are.equal(case[3], credentials)
        if credentials == nil then
          assert.are.equal(case[4], code)
        else
          local claims, _, check_code = verifier:check(credentials)
          assert.are.equal(case[4], claims and claims.sub or check_code)
        end
      end)
    end
  end)

  describe("register options", function()
    local cases = {
      { { keys_file = "k", nmae = "x" }, "bad argument #1 to 'register' (unknown option 'nmae')" },
      { { keys_file = "k", header = "cookie" },
        "bad argument #1 to 'register' (option 'header' must be \"authorization\" or \"x-rucio-auth-token\", "
          .. "got \"cookie\")" },
      { { keys_file = "k", leeway = -1 },
        "bad argument #1 to 'register' (option 'leeway' must be an integer of at least 0, got -1)" },
      { { keys_file = "k", reload_every = 0 },
        "bad argument #1 to 'register' (option 'reload_every' must be an integer of at least 1, got 0)" },
      { { keys_file = "k", cache_size = 1.5 },
        "bad argument #1 to 'register' (option 'cache_size' must be an integer of at least 0, got 1.5)" },
      { { keys_file = "k", aud = { 1 } }, "bad argument #1 to 'register' (option 'aud' must be a list of strings)" },
      { { keys_file = "k", policy = 3 },
        "bad argument #1 to 'register' (option 'policy' must be a Policy, a table of policy settings "
          .. "or an Arvados config path, got number)" },
      { { keys_file = "k", denylist = true },
        "bad argument #1 to 'register' (option 'denylist' must be a denylist file path or a Denylist, got boolean)" },
      { { keys_file = "k", name = "a b" },
        "bad argument #1 to 'register' (option 'name' must be a name of letters, digits, '_', '-' and '.')" },
      { {}, "bad argument #1 to 'register' (give exactly one of the options 'keys_file' and 'jwks_uri')" },
      { { keys_file = "k", jwks_uri = "http://127.0.0.1/jwks" },
        "bad argument #1 to 'register' (give exactly one of the options 'keys_file' and 'jwks_uri')" },
    }
    for _, case in ipairs(cases) do
      it("raises " .. case[2], function()
        assert.has_error(function() gateway.register(case[1]) end, case[2])
      end)
    end

    it("takes algs and require as one name or a list, as tp.verify does", function()
      for _, algs in ipairs { "RS256", { "RS256", "ES256" } } do
        local opts = gateway.check_options { keys_file = "k", algs = algs, require = "jti" }
        assert.are.same({ algs, "jti" }, { opts.algs, opts.require })
      end
      assert.has_error(function() gateway.register { keys_file = "k", algs = 256 } end,
        "bad argument #1 to 'register' (option 'algs' must be a list of strings, got number)")
    end)

    it("fills in the defaults and keeps what is given", function()
      local opts = gateway.check_options{ keys_file = "k", policy = { max_token_lifetime = "1h" } }
      assert.are.same({ name = "tokenpolicy-auth", header = "authorization", cache_size = 10000, reload_every = 60,
        min_refetch = 30, jwks_timeout = 5, keys_file = "k", policy = { max_token_lifetime = "1h" } }, opts)
    end)

    it("takes a Policy and a Denylist object as they are", function()
      local dir = haproxy.sandbox()
      local list = assert(tp.denylist(dir .. "/denylist"))
      local policy = tp.policy{ max_token_lifetime = "1h" }
      local opts = gateway.check_options{ jwks_uri = "http://127.0.0.1/jwks", policy = policy, denylist = list }
      assert.are.equal(policy, opts.policy)
      assert.are.equal(list, opts.denylist)
      list:close()
      os.execute("rm -rf " .. dir)
    end)

    it("raises outside HAProxy, once the options are right", function()
      assert.has_error(function() gateway.register{ keys_file = "k" } end,
        "tokenpolicy.haproxy: register must be called from a file HAProxy loads (lua-load)")
    end)
  end)
end)

describe("examples/haproxy/haproxy.cfg", function()
  local dir
  before_each(function()
    dir = haproxy.sandbox()
    local a = signers()
    haproxy.write(dir .. "/keys.pem", crypto.public_of(pem_a))
    assert(a)
  end)
  after_each(function()
    os.execute("rm -rf '" .. dir .. "'")
    collectgarbage()
  end)

  for _, mode in ipairs{ "lua-load", "lua-load-per-thread" } do
    it("passes haproxy -c with " .. mode, function()
      local ok, out = haproxy.check{ dir = dir, mode = mode,
        settings = { KEYS_FILE = dir .. "/keys.pem", DENYLIST = dir .. "/denylist", NBTHREAD = 2 } }
      assert.is_true(ok, out)
      assert.matches("Configuration file is valid", out, 1, true)
    end)
  end

  it("makes HAProxy refuse to start with the message of a wrong option", function()
    local ok, out = haproxy.check{ dir = dir,
      settings = { KEYS_FILE = dir .. "/keys.pem", DENYLIST = dir .. "/denylist", HEADER = "cookie" } }
    assert.is_false(ok)
    assert.matches([[bad argument #1 to 'register' (option 'header' must be "authorization" or "x-rucio-auth-token", ]]
      .. [[got "cookie")]], out, 1, true)
  end)

  it("makes HAProxy refuse to start when the key file cannot be read", function()
    local ok, out = haproxy.check{ dir = dir,
      settings = { KEYS_FILE = dir .. "/missing.pem", DENYLIST = dir .. "/denylist" } }
    assert.is_false(ok)
    assert.matches("tokenpolicy-auth: keys_file " .. dir .. "/missing.pem: not_found: ", out, 1, true)
  end)

  it("(the spec helper) says why HAProxy did not start, and removes the sandbox", function()
    haproxy.write(dir .. "/keys.pem", "not a key")
    local ok, err = pcall(haproxy.start, { dir = dir, settings = { KEYS_FILE = dir .. "/keys.pem" } })
    assert.is_false(ok)
    assert.matches("haproxy did not start:", err, 1, true)
    assert.matches("tokenpolicy-auth: keys_file " .. dir .. "/keys.pem: malformed: ", err, 1, true)
    assert.is_nil(io.open(dir .. "/keys.pem"))
  end)

  it("makes HAProxy refuse to start with a malformed key file", function()
    haproxy.write(dir .. "/keys.pem", "not a key")
    local ok, out = haproxy.check{ dir = dir,
      settings = { KEYS_FILE = dir .. "/keys.pem", DENYLIST = dir .. "/denylist" } }
    assert.is_false(ok)
    assert.matches("tokenpolicy-auth: keys_file " .. dir .. "/keys.pem: malformed: ", out, 1, true)
  end)
end)

for _, mode in ipairs{ "lua-load", "lua-load-per-thread" } do
  describe("HAProxy with " .. mode .. " and nbthread 2", function()
    after_each(function() collectgarbage() end)

    describe("with keys from a key file", function()
      local h, a, b, c
      local keys_line
      setup(function()
        a, b, c = signers()
        local dir = haproxy.sandbox()
        haproxy.write(dir .. "/keys.pem", crypto.public_of(pem_a))
        -- A denylist that exists from the start, with an unrelated entry.
        local list = assert(tp.denylist(dir .. "/denylist"))
        assert(list:add("unrelated", os.time() + 3600))
        list:close()
        h = haproxy.start{ dir = dir, mode = mode, settings = {
          KEYS_FILE = dir .. "/keys.pem", DENYLIST = dir .. "/denylist", MAX_TOKEN_LIFETIME = "1h",
          LEEWAY = 1, RELOAD_EVERY = 1, NBTHREAD = 2 } }
        keys_line = "tokenpolicy-auth: keys_file " .. dir .. "/keys.pem: 1 keys in use"
      end)
      teardown(function() haproxy.stop(h) end)

      it("lets a valid token through, and the backend sees its subject", function()
        local t = token(a)
        for _ = 1, 4 do  -- the first verifies, the others may come from the cache
          local status, _, body = haproxy.get(h, bearer(t))
          assert.are.same({ 200, "subject=alice\n" }, { status, body })
        end
      end)

      it("does not pass on a subject header the client sent", function()
        local headers = bearer(token(a))
        headers["x-auth-subject"] = "mallory"
        local status, _, body = haproxy.get(h, headers)
        assert.are.same({ 200, "subject=alice\n" }, { status, body })
      end)

      it("leaves the subject unset when it holds control characters (no forged headers)", function()
        local status, _, body = haproxy.get(h, bearer(token(a, { sub = "alice\r\nX-Forged: 1" })))
        assert.are.same({ 200, "subject=\n" }, { status, body })
      end)

      local now = os.time()
      local refusals = {
        { "an expired token", function() return token(a, { iat = now - 600, exp = now - 120 }) end, "expired" },
        { "a bad signature", function() return token(c) end, "bad_signature" },
        { "a wrong audience", function() return token(a, { aud = "other" }) end, "bad_audience" },
        { "a wrong issuer", function() return token(a, { iss = "https://evil.example" }) end, "bad_issuer" },
        { "alg none", function() return unsigned{ iss = ISS, aud = AUD, sub = "alice", exp = now + 300 } end,
          "alg_not_allowed" },
        { "a lifetime beyond the policy's maximum", function() return token(a, { exp = now + 7200 }) end,
          "exceeds_max_lifetime" },
        { "a token that is not a JWT", function() return "not-a-jwt" end, "malformed" },
      }
      for _, case in ipairs(refusals) do
        it("answers 401 invalid_token to " .. case[1] .. " (" .. case[3] .. ")", function()
          refused(h, case[3], bearer(case[2]()))
        end)
      end

      it("answers 401 with a challenge without an error to a request without a token", function()
        for _, headers in ipairs{ {}, { authorization = "Basic dXNlcjpwYXNz" } } do
          local status, got, body = haproxy.get(h, headers)
          assert.are.same({ 401, 'Bearer realm="api"', "a bearer token is needed\n" },
            { status, got["www-authenticate"], body })
        end
      end)

      it("answers 403 insufficient_scope to a valid token without the scope", function()
        local status, got = haproxy.get(h, bearer(token(a, { scope = "write" })))
        assert.are.same({ 403, 'Bearer realm="api", error="insufficient_scope", scope="read"' },
          { status, got["www-authenticate"] })
        status = haproxy.get(h, bearer(token(a, { scope = NONE })))
        assert.are.equal(403, status)
      end)

      it("refuses a revoked jti once the denylist file has it (after the reload)", function()
        local t, claims = token(a)
        assert.are.equal(200, (haproxy.get(h, bearer(t))))
        local before = haproxy.count(h, "tokenpolicy-auth: denylist: reloaded, 2 entries")
        local list = assert(tp.denylist(h.dir .. "/denylist"))
        assert(list:add(claims.jti, claims.exp))
        list:close()
        logged_by_every_state(h, "tokenpolicy-auth: denylist: reloaded, 2 entries", before)
        for _ = 1, 4 do refused(h, "revoked", bearer(t)) end
        assert.are.equal(200, (haproxy.get(h, bearer(token(a)))))
      end)

      it("refuses a cached token once its exp passes", function()
        local t, claims = token(a, { exp = os.time() + 3 })
        assert.are.equal(200, (haproxy.get(h, bearer(t))))
        local status
        haproxy.wait_for("the token to expire", function()
          status = haproxy.get(h, bearer(t))
          return status ~= 200, status
        end, 10, 0.2)
        -- Not before its exp (whole seconds), served from the cache until then.
        assert.is_true(os.time() >= claims.exp, "refused before exp")
        for _ = 1, 4 do refused(h, "expired", bearer(t)) end
      end)

      it("takes a rotated key from the key file; a malformed new file keeps the keys in use", function()
        local old = token(a)
        assert.are.equal(200, (haproxy.get(h, bearer(old))))
        -- A malformed file: logged once by each state, the old key stays.
        local warning = "tokenpolicy-auth: keys_file " .. h.dir .. "/keys.pem: malformed: "
        haproxy.write(h.dir .. "/keys.pem", "-----BEGIN PUBLIC KEY-----\nbroken\n-----END PUBLIC KEY-----\n")
        logged_by_every_state(h, warning, 0)
        assert.are.equal(200, (haproxy.get(h, bearer(old))))
        haproxy.sleep(2.2)  -- two more reload periods: still logged once per state
        assert.are.equal(h.states, haproxy.count(h, warning))
        assert.are.equal(200, (haproxy.get(h, bearer(old))))
        -- The new key: new tokens pass, the old key's are refused.
        local before = haproxy.count(h, keys_line)
        haproxy.write(h.dir .. "/keys.pem", crypto.public_of(pem_b))
        logged_by_every_state(h, keys_line, before)
        for _ = 1, 4 do
          local status, _, body = haproxy.get(h, bearer(token(b, { sub = "bob" }, "ES256")))
          assert.are.same({ 200, "subject=bob\n" }, { status, body })
          assert.are.equal(401, (haproxy.get(h, bearer(old))))
        end
      end)

      it("never writes a token to its log", function()
        assert.is_nil(haproxy.output(h):find("eyJ", 1, true))
      end)
    end)

    describe("with an Arvados config.yml as the policy", function()
      local h, a
      setup(function()
        a = signers()
        local dir = haproxy.sandbox()
        haproxy.write(dir .. "/keys.pem", crypto.public_of(pem_a))
        -- MaxTokenLifetime 24h (the admin guide's example).
        h = haproxy.start{ dir = dir, mode = mode, settings = { KEYS_FILE = dir .. "/keys.pem",
          DENYLIST = dir .. "/denylist", ARVADOS_CONFIG = tp.cwd() .. "/examples/sample/arvados-config.yml",
          NBTHREAD = 2 } }
      end)
      teardown(function() haproxy.stop(h) end)

      it("refuses a token that lives longer than API.MaxTokenLifetime", function()
        local now = os.time()
        assert.are.equal(200, (haproxy.get(h, bearer(token(a, { exp = now + 3600 })))))
        refused(h, "exceeds_max_lifetime", bearer(token(a, { exp = now + 25 * 3600 })))
      end)
    end)

    describe("with X-Rucio-Auth-Token", function()
      local h, a
      setup(function()
        a = signers()
        local dir = haproxy.sandbox()
        haproxy.write(dir .. "/keys.pem", crypto.public_of(pem_a))
        h = haproxy.start{ dir = dir, mode = mode, settings = { KEYS_FILE = dir .. "/keys.pem",
          DENYLIST = dir .. "/denylist", HEADER = "x-rucio-auth-token", NBTHREAD = 2 } }
      end)
      teardown(function() haproxy.stop(h) end)

      it("takes the token from X-Rucio-Auth-Token and ignores Authorization", function()
        local t = token(a, { sub = "root" })
        local status, _, body = haproxy.get(h, { ["x-rucio-auth-token"] = t })
        assert.are.same({ 200, "subject=root\n" }, { status, body })
        status = haproxy.get(h, bearer(t))
        assert.are.equal(401, status)
        refused(h, "malformed", { ["x-rucio-auth-token"] = RUCIO_TOKEN })
      end)
    end)

    describe("with keys from a JWKS URI served by oidc-provider", function()
      local RESOURCE, SCOPE = "https://rucio.example.org", "storage.read:/"
      local h, p, jwks_line
      setup(function()
        p = oidc.start()
        local dir = haproxy.sandbox()
        h = haproxy.start{ dir = dir, mode = mode, settings = { JWKS_URI = p.jwks_uri, ISS = p.issuer,
          AUD = RESOURCE, ALGS = "RS256", SCOPE = SCOPE, DENYLIST = dir .. "/denylist", RELOAD_EVERY = 1,
          NBTHREAD = 2 } }
        jwks_line = "tokenpolicy-auth: jwks_uri " .. p.jwks_uri .. ": 1 keys in use"
        -- Each state logs its keys at load and at the task's first round.
        logged_by_every_state(h, jwks_line, h.states)
      end)
      teardown(function()
        haproxy.stop(h)
        oidc.stop(p)
      end)

      it("lets the provider's tokens through, and takes its rotated key after the reload", function()
        local old = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
        local status, _, body = haproxy.get(h, bearer(old))
        assert.are.same({ 200, "subject=tp-client\n" }, { status, body })
        local before = haproxy.count(h, jwks_line)
        oidc.rotate(p)
        local new = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
        logged_by_every_state(h, jwks_line, before)
        for _ = 1, 4 do
          status, _, body = haproxy.get(h, bearer(new))
          assert.are.same({ 200, "subject=tp-client\n" }, { status, body })
          refused(h, "unknown_key", bearer(old))
        end
      end)

      it("keeps the keys in use when the provider is gone, and says so once", function()
        local t = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
        oidc.stop(p)
        local warning = "tokenpolicy-auth: jwks_uri " .. p.jwks_uri .. ": http: status 503 (keeping the previous keys)"
        logged_by_every_state(h, warning, 0)
        assert.are.equal(200, (haproxy.get(h, bearer(t))))
      end)
    end)

    describe("with keys from oidc-provider, a long reload period and a short min_refetch", function()
      local RESOURCE, SCOPE = "https://rucio.example.org", "storage.read:/"
      local h, p
      setup(function()
        p = oidc.start()
        local dir = haproxy.sandbox()
        h = haproxy.start{ dir = dir, mode = mode, settings = { JWKS_URI = p.jwks_uri, ISS = p.issuer,
          AUD = RESOURCE, ALGS = "RS256", SCOPE = SCOPE, DENYLIST = dir .. "/denylist", RELOAD_EVERY = 3600,
          MIN_REFETCH = 1, NBTHREAD = 2 } }
        -- Each state's first round at start (the second "keys in use" line).
        logged_by_every_state(h, "tokenpolicy-auth: jwks_uri " .. p.jwks_uri .. ": 1 keys in use", h.states)
      end)
      teardown(function()
        haproxy.stop(h)
        oidc.stop(p)
      end)

      it("reloads early when a token names an unknown kid (a rotation)", function()
        local old = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
        assert.are.equal(200, (haproxy.get(h, bearer(old))))
        oidc.rotate(p)
        local new = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
        -- The next round would come in an hour: only the early reload can
        -- let the new token through, in every state.
        local in_a_row = 0
        haproxy.wait_for("six answers 200 in a row", function()
          local status = haproxy.get(h, bearer(new))
          in_a_row = status == 200 and in_a_row + 1 or 0
          return in_a_row >= 6, status
        end, 10, 0.1)
        refused(h, "unknown_key", bearer(old))
      end)
    end)

    describe("with a JWKS URI that fails at start", function()
      local h, peer, file, a
      setup(function()
        a = signers()
        peer = http_peer.start()
        local dir = haproxy.sandbox()
        file = dir .. "/served.jwks"
        haproxy.write(file, "503")
        h = haproxy.start{ dir = dir, mode = mode, settings = { JWKS_URI = peer.base .. "/jwks-rotating?file=" .. file,
          DENYLIST = dir .. "/denylist", RELOAD_EVERY = 1, NBTHREAD = 2 } }
      end)
      teardown(function()
        haproxy.stop(h)
        http_peer.stop(peer)
      end)

      it("starts anyway, refuses tokens until keys arrive, then takes them", function()
        local t = token(a, nil, "RS256", "key-a")
        local status, got = haproxy.get(h, bearer(t))
        assert.are.equal(401, status)
        assert.matches('error="invalid_token", error_description="%l+"', got["www-authenticate"])
        local line = "tokenpolicy-auth: jwks_uri " .. peer.base .. "/jwks-rotating: 1 keys in use"
        haproxy.write(file, tp.json_encode{ keys = { crypto.rsa_public_jwk(pem_a, "key-a") } })
        logged_by_every_state(h, line, 0)
        for _ = 1, 4 do
          assert.are.equal(200, (haproxy.get(h, bearer(t))))
        end
      end)
    end)

    describe("with keys from a JWKS URI whose answer changes", function()
      local h, peer, file, a, c, jwks_line
      local function serve(text) haproxy.write(file, text) end
      setup(function()
        local _
        a, _, c = signers()
        peer = http_peer.start()
        local dir = haproxy.sandbox()
        file = dir .. "/served.jwks"
        serve(tp.json_encode{ keys = { crypto.rsa_public_jwk(pem_a, "key-a") } })
        local uri = peer.base .. "/jwks-rotating?file=" .. file
        h = haproxy.start{ dir = dir, mode = mode, settings = { JWKS_URI = uri, DENYLIST = dir .. "/denylist",
          RELOAD_EVERY = 1, NBTHREAD = 2 } }
        jwks_line = "tokenpolicy-auth: jwks_uri " .. peer.base .. "/jwks-rotating: 1 keys in use"
        logged_by_every_state(h, jwks_line, h.states)
      end)
      teardown(function()
        haproxy.stop(h)
        http_peer.stop(peer)
      end)

      it("keeps the keys in use when the answer is malformed, and says so once", function()
        local t = token(a, nil, "RS256", "key-a")
        assert.are.equal(200, (haproxy.get(h, bearer(t))))
        local warning = "tokenpolicy-auth: jwks_uri " .. peer.base .. "/jwks-rotating: malformed: "
        serve('{"keys": [{"kty": "RSA"')
        logged_by_every_state(h, warning, 0)
        haproxy.sleep(2.2)  -- two more reload periods: still logged once per state
        assert.are.equal(h.states, haproxy.count(h, warning))
        assert.are.equal(200, (haproxy.get(h, bearer(t))))
        assert.is_nil(haproxy.output(h):find("?file=", 1, true))  -- no query in the log
      end)

      it("takes a rotated key after the reload", function()
        local before = haproxy.count(h, jwks_line)
        serve(tp.json_encode{ keys = { crypto.rsa_public_jwk(pem_c, "key-c") } })
        logged_by_every_state(h, jwks_line, before)
        local status, _, body = haproxy.get(h, bearer(token(c, { sub = "bob" }, "RS256", "key-c")))
        assert.are.same({ 200, "subject=bob\n" }, { status, body })
        refused(h, "unknown_key", bearer(token(a, nil, "RS256", "key-a")))
      end)
    end)
  end)
end
