-- The prepared verifier: tp.verifier{...} and v:check(token [, now])
-- (csrc/verifier.c).  It must answer exactly as tp.verify does for the same
-- options, then add the policy's verdict, the denylist and a cache.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"
local fails = require("helpers.expect").fails

local NOW = 1800000000
local ISS = "https://idp.example"

local rsa, rsa_other_kid, ec, ec_public, mac, jwks_text, set
local function setup_keys()
  local pem = crypto.rsa_private()
  rsa = assert(tp.keys(pem, { kid = "rsa-1" }))
  rsa_other_kid = assert(tp.keys(pem, { kid = "rsa-9" }))
  ec = assert(tp.keys(crypto.ec_private("P-256"), { kid = "ec-1" }))
  ec_public = assert(tp.keys(crypto.public_of(crypto.ec_private("P-256")), { kid = "ec-1" }))
  mac = assert(tp.keys(crypto.hmac_jwk(("m"):rep(32), "mac-1")))
  -- One JWK Set, for a KeySet and for a JwksSource fed with set_keys.
  jwks_text = tp.json_encode { keys = {
    crypto.rsa_public_jwk(pem, "rsa-1"),
    tp.json_decode(crypto.hmac_jwk(("m"):rep(32), "mac-1")),
  } }
  set = assert(tp.keys(jwks_text))
end

local function claims(extra)
  local c = { iss = ISS, sub = "alice", aud = "rucio", iat = NOW - 10, exp = NOW + 3600, jti = "jti-1",
              scope = "storage.read:/" }
  for k, v in pairs(extra or {}) do
    if v == "nil" then c[k] = nil else c[k] = v end
  end
  return c
end

local function b64json(value)
  return tp.b64url_encode(tp.json_encode(value))
end

-- A token with any header and payload and a signature that cannot verify.
local function unsigned(header, payload)
  return b64json(header) .. "." .. b64json(payload) .. "." .. tp.b64url_encode(("s"):rep(256))
end

-- A token signed with the RSA key whatever its header and payload texts.
local function signed(header_text, payload_text)
  local input = tp.b64url_encode(header_text) .. "." .. tp.b64url_encode(payload_text)
  return input .. "." .. tp.b64url_encode(crypto.openssl_sign(crypto.rsa_private(), input, "sha256"))
end
local RS_HEADER = '{"alg":"RS256","kid":"rsa-1"}'

-- A plain table of whatever check or verify returned (a view or a table).
local function plain(x)
  if type(x) == "userdata" then return x:totable() end
  if type(x) == "table" then
    local t = {}
    for k, v in pairs(x) do t[k] = v end
    return t
  end
  return x
end

local function results(...)
  local n = select("#", ...)
  local r = { n = n }
  for i = 1, n do r[i] = plain((select(i, ...))) end
  return r
end

describe("verifier", function()
  setup(setup_keys)
  after_each(function() collectgarbage() end)

  describe("answers as tp.verify does", function()
    local tokens
    setup(function()
      local good = tp.sign(claims(), rsa)
      local other = tp.sign(claims { sub = "mallory" }, rsa)
      local h, p = good:match("^([^.]+)%.([^.]+)%.")
      local bad_sig = h .. "." .. p .. "." .. other:match("%.([^.]+)$")
      tokens = {
        { "a good RS256 token", good },
        { "a good HS256 token", tp.sign(claims(), mac, { alg = "HS256" }) },
        { "a Bearer-prefixed token with spaces", "Bearer  " .. good .. "\n" },
        { "an expired token", tp.sign(claims { exp = NOW - 120 }, rsa) },
        { "a token expired within the leeway", tp.sign(claims { exp = NOW - 30 }, rsa) },
        { "a token with a float exp", tp.sign(claims { exp = NOW + 0.5 }, rsa) },
        { "a token whose exp is a string", tp.sign(claims { exp = "soon" }, rsa) },
        { "a token without exp", tp.sign(claims { exp = "nil" }, rsa) },
        { "a token with nbf in the future", tp.sign(claims { nbf = NOW + 600 }, rsa) },
        { "a token issued in the future", tp.sign(claims { iat = NOW + 600 }, rsa) },
        { "a bad signature", bad_sig },
        { "a wrong issuer", tp.sign(claims { iss = "https://evil.example" }, rsa) },
        { "an issuer that is not a string", tp.sign(claims { iss = 7 }, rsa) },
        { "no issuer", tp.sign(claims { iss = "nil" }, rsa) },
        { "a wrong audience", tp.sign(claims { aud = "other" }, rsa) },
        { "an audience list with ours", tp.sign(claims { aud = { "x", "rucio" } }, rsa) },
        { "an audience list without ours", tp.sign(claims { aud = { "x", "y" } }, rsa) },
        { "an audience object", tp.sign(claims { aud = { x = "rucio" } }, rsa) },
        { "a typ at+jwt", tp.sign(claims(), rsa, { typ = "at+jwt" }) },
        { "alg none", unsigned({ alg = "none" }, claims()) },
        { "alg NoNe", unsigned({ alg = "NoNe" }, claims()) },
        { "an unknown alg", unsigned({ alg = "XS256" }, claims()) },
        { "no alg", unsigned({ kid = "rsa-1" }, claims()) },
        { "an alg that is not a string", unsigned({ alg = 5 }, claims()) },
        { "an unknown kid", tp.sign(claims(), rsa_other_kid) },
        { "a kid that is not a string", unsigned({ alg = "RS256", kid = 5 }, claims()) },
        { "crit", tp.sign(claims(), rsa, { header = { crit = { "exp" } } }) },
        { "an empty crit", tp.sign(claims(), rsa, { header = { crit = {} } }) },
        { "a header with an aud list", tp.sign(claims(), rsa, { header = { aud = { "rucio" }, x = { y = 1 } } }) },
        { "a duplicate claim", b64json({ alg = "RS256", kid = "rsa-1" }) .. "." .. tp.b64url_encode(
          '{"sub":"a","exp":' .. (NOW + 60) .. ',"sub":"b"}') .. "." .. tp.b64url_encode(("s"):rep(256)) },
        { "a nested payload", tp.sign(claims { realm_access = { roles = { "a", "b" } }, n = tp.null }, rsa) },
        { "a payload with escapes", tp.sign(claims { sub = "al\"ice\n\u{e9}" }, rsa) },
        { "an empty string", "" },
        { "two parts", "abc.def" },
        { "a JWE", "a.b.c.d.e" },
        { "a path", "/tmp/token" },
        { "bad base64url", "e30.e30.!!" },
        { "a header that is not JSON", tp.b64url_encode("{") .. "." .. b64json(claims()) .. ".c2ln" },
        { "a header that is an array", b64json({ 1 }) .. "." .. b64json(claims()) .. ".c2ln" },
        { "a payload that is a number", signed(RS_HEADER, "123") },
        { "a payload that is a string", signed(RS_HEADER, '"x"') },
        { "a payload that is null", signed(RS_HEADER, "null") },
        { "a payload that is an array", signed(RS_HEADER, "[1]") },
        { "a payload with a duplicate claim", signed(RS_HEADER, '{"sub":"a","exp":' .. (NOW + 60) .. ',"sub":"b"}') },
        { "a payload with a nested duplicate", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"x":{"a":1,"a":2}}') },
        { "a payload with an escaped NUL", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"x":"\\u0000"}') },
        { "a payload with a lone surrogate", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"x":"\\ud800"}') },
        { "a payload with invalid UTF-8", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"x":"\xc3\x28"}') },
        { "a payload with an overlong form", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"x":"\xc0\xaf"}') },
        { "a payload with a huge integer", signed(RS_HEADER, '{"exp":99999999999999999999}') },
        { "a payload with a 19-digit exp", signed(RS_HEADER, '{"exp":1000000000000000000}') },
        { "a payload with a float exp", signed(RS_HEADER, '{"exp":1.8e9,"iat":-0}') },
        { "a payload with trailing text", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. '} x') },
        { "a payload not valid JSON", signed(RS_HEADER, '{"exp":') },
        { "a payload nested 70 levels", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"x":'
          .. ("["):rep(70) .. ("]"):rep(70) .. "}") },
        { "a payload nested 20 levels", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"x":'
          .. ("["):rep(20) .. ("]"):rep(20) .. "}") },
        { "a payload with a mixed aud list",
          signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"aud":["x",["rucio"],null,"rucio"]}') },
        { "a payload with a null exp", signed(RS_HEADER, '{"exp":null}') },
        { "a payload with a string iat", signed(RS_HEADER, '{"exp":' .. (NOW + 60) .. ',"iat":"x"}') },
        { "a header with a duplicate alg", signed('{"alg":"RS256","alg":"RS256"}', '{"exp":' .. (NOW + 60) .. '}') },
        { "a header with crit null", signed('{"alg":"RS256","crit":null}', '{"exp":' .. (NOW + 60) .. '}') },
        { "a header with crit an object", signed('{"alg":"RS256","crit":{"a":1}}', '{"exp":' .. (NOW + 60) .. '}') },
        { "a header with crit [null]", signed('{"alg":"RS256","crit":[null]}', '{"exp":' .. (NOW + 60) .. '}') },
        { "a header with an escaped alg",
          signed('{"alg":"RS\\u0032\\u0035\\u0036"}', '{"exp":' .. (NOW + 60) .. '}') },
        { "a header with typ at+JWT",
          signed('{"alg":"RS256","typ":"application/at+JWT"}', '{"exp":' .. (NOW + 60) .. '}') },
        { "a header that is a string", tp.b64url_encode('"RS256"') .. "." .. b64json(claims()) .. ".c2ln" },
        { "a header that is true", tp.b64url_encode("true") .. "." .. b64json(claims()) .. ".c2ln" },
        { "a payload that is not JSON", b64json({ alg = "RS256", kid = "rsa-1" }) .. ".e3" .. ".c2ln" },
        { "a large token", tp.sign(claims { pad = ("x"):rep(20000) }, rsa) },
      }
    end)

    local option_sets = {
      { name = "default options" },
      { name = "iss and aud", iss = ISS, aud = "rucio" },
      { name = "iss and aud lists", iss = { "a", ISS }, aud = { "b", "rucio" } },
      { name = "HMAC allowed", algs = { "HS256", "RS256" } },
      { name = "typ at+jwt", typ = "at+jwt" },
      { name = "require jti and scope", require = { "jti", "scope", "azp" } },
      { name = "require a single name", require = "sub" },
      { name = "no leeway", leeway = 0 },
      { name = "exp not required", require_exp = false },
      { name = "a small max_size", max_size = 300 },
      { name = "70 required names", require = (function()
        local names = { "sub" }
        for i = 1, 69 do names[#names + 1] = "x" .. i end
        return names
      end)() },
    }

    for _, keys_kind in ipairs { "KeySet", "JwksSource" } do
      for _, opts in ipairs(option_sets) do
        it("with a " .. keys_kind .. " and " .. opts.name, function()
          local keys = set
          if keys_kind == "JwksSource" then
            keys = tp.jwks {}
            assert(keys:set_keys(jwks_text, NOW))
          end
          local vopts, verify_opts = { keys = keys }, { now = NOW }
          for k, v in pairs(opts) do
            if k ~= "name" then vopts[k], verify_opts[k] = v, v end
          end
          local v = tp.verifier(vopts)
          vopts.cache = 8
          local cached = tp.verifier(vopts)
          for _, case in ipairs(tokens) do
            local want = results(tp.verify(case[2], keys, verify_opts))
            assert.are.same(want, results(v:check(case[2], NOW)), case[1])
            -- with a cache: the first answer and the second (a hit) alike
            assert.are.same(want, results(cached:check(case[2], NOW)), case[1] .. " (cache)")
            assert.are.same(want, results(cached:check(case[2], NOW)), case[1] .. " (cache, again)")
            -- an embedding HAProxy shares the thread's OpenSSL error queue
            assert.is_false(tp._openssl_error_pending(), case[1])
          end
        end)
      end
    end

    it("with an EC key", function()
      local v = tp.verifier { keys = ec_public }
      for _, token in ipairs { tp.sign(claims(), ec), tp.sign(claims { exp = NOW - 100 }, ec) } do
        assert.are.same(results(tp.verify(token, ec_public, { now = NOW })), results(v:check(token, NOW)))
      end
    end)
  end)

  describe("with a policy", function()
    local policy
    setup(function()
      policy = assert(tp.policy { max_token_lifetime = "1h", login_token_lifetime = "2h" })
    end)

    local cases = {
      { "a token within the policy", claims { exp = NOW + 1800, iat = NOW - 60 } },
      { "a lifetime over the maximum", claims { exp = NOW + 7200, iat = NOW - 60 }, "exceeds_max_lifetime" },
      { "a lifetime over the maximum without iat", claims { exp = NOW + 7200, iat = "nil" }, "exceeds_max_lifetime" },
      { "no expiry", claims { exp = "nil" }, "no_expiry" },
      { "a login session that is over", claims { auth_time = NOW - 3 * 3600 }, "expired" },
      { "expired under the policy, within the leeway", claims { exp = NOW - 10, iat = NOW - 100 }, "expired" },
      { "an auth_time that is not a number", claims { auth_time = "x" }, "malformed" },
    }
    for _, case in ipairs(cases) do
      it(case[3] and ("refuses " .. case[1] .. " with " .. case[3]) or ("accepts " .. case[1]), function()
        local v = tp.verifier { keys = rsa, policy = policy, require_exp = false }
        local token = tp.sign(case[2], rsa)
        if case[3] then
          local msg = fails(case[3], v:check(token, NOW))
          assert.is_nil(msg:find(token, 1, true))
        else
          local c = assert(v:check(token, NOW))
          assert.are.equal("alice", c.sub)
        end
        -- The verdict is the one Policy:evaluate gives on the same claims.
        local verdict = policy:evaluate(case[2], NOW)
        if verdict and case[3] ~= "malformed" then
          assert.are.equal(case[3] or "valid", verdict.state)
        end
      end)
    end
  end)

  describe("with a denylist", function()
    local dir
    before_each(function() dir = require("helpers.expect").new_dir() end)
    after_each(function() require("helpers.expect").remove_dir(dir) end)

    it("refuses a token whose jti is listed with revoked", function()
      local list = assert(tp.denylist(dir .. "/denied"))
      local v = tp.verifier { keys = rsa, denylist = list }
      local token = tp.sign(claims { jti = "gone" }, rsa)
      assert(v:check(token, NOW))
      assert(list:add("gone", NOW + 3600))
      local msg = fails("revoked", v:check(token, NOW))
      assert.is_nil(msg:find("gone", 1, true))
      -- once the entry has expired, the token passes again
      assert(v:check(token, NOW + 3600))
      -- a token without jti is not affected
      assert(v:check(tp.sign(claims { jti = "nil" }, rsa), NOW))
    end)
  end)

  describe("cache", function()
    local dir
    before_each(function() dir = require("helpers.expect").new_dir() end)
    after_each(function() require("helpers.expect").remove_dir(dir) end)

    local function stats_of(v)
      local s = v:stats()
      return { s.hits, s.misses, s.entries, s.evictions }
    end

    it("counts hits and misses and returns the same claims on a hit", function()
      local v = tp.verifier { keys = rsa, cache = 4 }
      local token = tp.sign(claims(), rsa)
      local c1, h1 = assert(v:check(token, NOW))
      local c2, h2 = assert(v:check(token, NOW + 1))
      -- A hit makes a new claims view from the entry's bytes (kept out of
      -- the Lua heap); the header view of one issuer's tokens is shared.
      assert.are_not.equal(c1, c2)
      assert.are.same(c1:totable(), c2:totable())
      assert.are.equal("alice", c2.sub)
      assert.are.equal(h1, h2)
      assert.are.same({ 1, 1, 1, 0 }, stats_of(v))
      -- the same token with a Bearer prefix is the same entry
      assert(v:check("Bearer " .. token, NOW + 2))
      assert.are.same({ 2, 1, 1, 0 }, stats_of(v))
      assert.are.equal("hits 2, misses 1, entries 1, evictions 0", tostring(v:stats()))
    end)

    it("is off by default", function()
      local v = tp.verifier { keys = rsa }
      local token = tp.sign(claims(), rsa)
      assert(v:check(token, NOW))
      assert(v:check(token, NOW))
      assert.are.same({ 0, 0, 0, 0 }, stats_of(v))
    end)

    it("never returns a token past its exp, leeway included", function()
      local v = tp.verifier { keys = rsa, cache = 4, leeway = 60 }
      local token = tp.sign(claims { exp = NOW + 100 }, rsa)
      assert(v:check(token, NOW))
      assert(v:check(token, NOW + 159))          -- within the leeway: a hit
      assert.are.same({ 1, 1, 1, 0 }, stats_of(v))
      fails("expired", v:check(token, NOW + 160))
      assert.are.same({ 1, 2, 0, 0 }, stats_of(v))
      -- and the answer is verify's
      assert.are.same(results(tp.verify(token, rsa, { now = NOW + 160 })), results(v:check(token, NOW + 160)))
    end)

    it("checks nbf and iat again when now moves back", function()
      local v = tp.verifier { keys = rsa, cache = 4, leeway = 0 }
      local token = tp.sign(claims { nbf = NOW - 10 }, rsa)
      assert(v:check(token, NOW))
      fails("not_yet_valid", v:check(token, NOW - 100))
    end)

    it("does not cache a token without exp", function()
      local v = tp.verifier { keys = rsa, cache = 4, require_exp = false }
      local token = tp.sign(claims { exp = "nil" }, rsa)
      assert(v:check(token, NOW))
      assert(v:check(token, NOW))
      assert.are.same({ 0, 2, 0, 0 }, stats_of(v))
    end)

    it("misses for a token differing in one byte", function()
      local v = tp.verifier { keys = rsa, cache = 4 }
      local token = tp.sign(claims(), rsa)
      assert(v:check(token, NOW))
      local last = token:sub(-1) == "A" and "B" or "A"
      local changed = token:sub(1, -2) .. last
      local want = results(tp.verify(changed, rsa, { now = NOW }))
      assert.are.same(want, results(v:check(changed, NOW)))
      assert.are.same({ 0, 2, 1, 0 }, stats_of(v))
    end)

    it("evicts at its size", function()
      local v = tp.verifier { keys = rsa, cache = 2 }
      local tokens = {}
      for i = 1, 3 do tokens[i] = tp.sign(claims { jti = "t" .. i }, rsa) end
      for i = 1, 3 do assert(v:check(tokens[i], NOW)) end
      assert.are.same({ 0, 3, 2, 1 }, stats_of(v))
      -- every token still verifies, cached or not
      for i = 1, 3 do assert.are.equal("t" .. i, assert(v:check(tokens[i], NOW)).jti) end
      local s = v:stats()
      assert.are.equal(2, s.entries)
      assert.are.equal(6, s.hits + s.misses)
    end)

    it("drops its entries when a JwksSource gets new keys", function()
      local source = tp.jwks {}
      assert(source:set_keys(jwks_text, NOW))
      local v = tp.verifier { keys = source, cache = 4 }
      local token = tp.sign(claims(), rsa)
      assert(v:check(token, NOW))
      assert(v:check(token, NOW))
      assert.are.same({ 1, 1, 1, 0 }, stats_of(v))
      assert(source:set_keys(jwks_text, NOW))
      assert(v:check(token, NOW))
      assert.are.same({ 1, 2, 1, 0 }, stats_of(v))
      -- keys without the token's key: refused, not served from the cache
      assert(source:set_keys(tp.json_encode { keys = { tp.json_decode(crypto.hmac_jwk(("z"):rep(32), "z")) } }, NOW))
      fails("unknown_key", v:check(token, NOW))
    end)

    it("checks the denylist on every hit", function()
      local list = assert(tp.denylist(dir .. "/denied"))
      local v = tp.verifier { keys = rsa, cache = 4, denylist = list }
      local token = tp.sign(claims { jti = "later-revoked" }, rsa)
      assert(v:check(token, NOW))
      assert(v:check(token, NOW))
      assert(list:add("later-revoked", NOW + 3600))
      fails("revoked", v:check(token, NOW))
      assert.are.equal(2, v:stats().hits)
    end)

    it("judges the policy again on every hit", function()
      local policy = assert(tp.policy { login_token_lifetime = "1h" })
      local v = tp.verifier { keys = rsa, cache = 4, policy = policy }
      local token = tp.sign(claims { auth_time = NOW - 1800 }, rsa)
      assert(v:check(token, NOW))
      assert(v:check(token, NOW + 60))
      fails("expired", v:check(token, NOW + 1800))
      assert.are.equal(2, v:stats().hits)
    end)

    it("keeps its entries out of the Lua heap, and its hits read like the first check", function()
      local v = tp.verifier { keys = rsa, cache = 600 }
      local tokens = {}
      for i = 1, 500 do tokens[i] = tp.sign(claims { jti = ("j"):rep(40) .. i, scope = ("s "):rep(100) }, rsa) end
      collectgarbage()
      collectgarbage()
      local before = collectgarbage("count")
      for i = 1, 500 do assert(v:check(tokens[i], NOW)) end
      collectgarbage()
      collectgarbage()
      -- 500 tokens of over 1,000 bytes each, with their views: were they
      -- Lua objects, the heap would grow by more than 800 KiB.
      assert.is_true(collectgarbage("count") - before < 100, "the Lua heap grew by "
        .. (collectgarbage("count") - before) .. " KiB")
      for i = 1, 500 do
        local c, h = assert(v:check(tokens[i], NOW + 1))
        assert.are.equal(("j"):rep(40) .. i, c.jti)
        assert.are.same(assert(tp.verify(tokens[i], rsa, { now = NOW })), c:totable())
        assert.are.equal("RS256", h.alg)
      end
      assert.are.same({ 500, 500, 500, 0 }, stats_of(v))
    end)

    it("keeps the views of claims read the slow way as they are", function()
      local v = tp.verifier { keys = rsa, cache = 4 }
      local token = tp.sign(claims { name = "Jos\u{e9} \"the\" user", weight = 1.5 }, rsa)
      local c1, h1 = assert(v:check(token, NOW))
      local c2, h2 = assert(v:check(token, NOW + 1))
      assert.are.equal(c1, c2)
      assert.are.equal(h1, h2)
      assert.are.equal("Jos\u{e9} \"the\" user", c2.name)
      assert.are.equal(1.5, c2.weight)
      assert.are.same({ 1, 1, 1, 0 }, stats_of(v))
    end)

    it("frees what it evicts and serves every token right while entries come and go", function()
      local v = tp.verifier { keys = rsa, cache = 3 }
      local tokens = {}
      for i = 1, 8 do
        -- every other one read the slow way, so both kinds of entry replace each other
        local extra = { jti = "e" .. i }
        if i % 2 == 0 then extra.name = "caf\u{e9} " .. i end
        tokens[i] = tp.sign(claims(extra), rsa)
      end
      for round = 1, 4 do
        for i = 1, 8 do
          local c = assert(v:check(tokens[i], NOW + round))
          assert.are.equal("e" .. i, c.jti)
          assert.are.equal(i % 2 == 0 and ("caf\u{e9} " .. i) or nil, c.name)
        end
      end
      -- 8 tokens in turn through 3 entries: each one was evicted before it came back
      assert.are.same({ 0, 32, 3, 29 }, stats_of(v))
    end)

    it("empties on flush", function()
      local v = tp.verifier { keys = rsa, cache = 4 }
      local token = tp.sign(claims(), rsa)
      assert(v:check(token, NOW))
      v:flush()
      assert.are.same({ 0, 1, 0, 0 }, stats_of(v))
      assert(v:check(token, NOW))
      assert.are.same({ 0, 2, 1, 0 }, stats_of(v))
    end)

    -- HAProxy runs every request in a new coroutine, whose stack starts
    -- small: a hit must answer (and refuse) there without running short.
    it("answers hits and refusals from fresh coroutines, with a source, a policy and a denylist", function()
      local list = assert(tp.denylist(dir .. "/denied"))
      local policy = assert(tp.policy { login_token_lifetime = "1h" })
      local source = tp.jwks {}
      assert(source:set_keys(jwks_text, NOW))
      local v = tp.verifier { keys = source, cache = 4, policy = policy, denylist = list }
      local token = tp.sign(claims { jti = "in-a-coroutine", auth_time = NOW - 60 }, rsa)
      local function in_coroutine(now)
        return coroutine.wrap(function() return v:check(token, now) end)()
      end
      for i = 1, 3 do
        local c = assert(in_coroutine(NOW + i))
        assert.are.equal("in-a-coroutine", c.jti)
      end
      fails("expired", in_coroutine(NOW + 3550))
      assert(list:add("in-a-coroutine", NOW + 7200))
      fails("revoked", in_coroutine(NOW + 5))
      assert.are.same({ 4, 1, 1, 0 }, stats_of(v))
    end)
  end)

  describe("claims", function()
    it("gives the claims and the header by field", function()
      local v = tp.verifier { keys = rsa, iss = ISS }
      local c, h = v:check(tp.sign(claims { groups = { "/atlas" } }, rsa), NOW)
      assert.are.equal("alice", c.sub)
      assert.are.equal(NOW + 3600, c.exp)
      assert.are.equal("integer", math.type(c.exp))
      assert.are.equal("jti-1", c.jti)
      assert.are.equal("storage.read:/", c.scope)
      assert.are.equal("/atlas", c.groups[1])
      assert.is_nil(c.azp)
      assert.are.equal("RS256", h.alg)
      assert.are.equal("rsa-1", h.kid)
      assert.are.equal("JWT", h.typ)
      assert.is_nil(h.crit)
    end)

    it("is a read-only view that lists, copies and prints like verify's tables", function()
      local token = tp.sign(claims { groups = { "/atlas" }, ["wlcg.ver"] = "1.0" }, rsa)
      local c, h = tp.verifier({ keys = rsa }):check(token, NOW)
      local want, want_header = tp.verify(token, rsa, { now = NOW })
      assert.are.equal("userdata", type(c))
      assert.are.equal("tokenpolicy.ClaimsView", getmetatable(c).__name)
      local seen = {}
      for k, v in pairs(c) do seen[k] = v end
      assert.are.same(want, seen)
      local copy = c:totable()
      assert.are.same(want, copy)
      copy.sub = "changed"
      assert.are.equal("alice", c.sub)
      assert.are_not.equal(copy, c:totable())
      assert.are.equal(tostring(want), tostring(c))
      assert.are.equal(tostring(want_header), tostring(h))
      assert.has_error(function() c.sub = "mallory" end,
        "a tokenpolicy.ClaimsView is read-only (claims:totable() gives a table of your own)")
      assert.has_error(function() h.alg = "none" end)
      assert.are.equal("alice", c.sub)
    end)

    it("reads claims with escapes, non-ASCII text and floats the slow way, alike", function()
      local odd = claims { sub = "al\"i\\ce", name = "Jos\u{e9}", score = 1.5, n = tp.null, iat = NOW - 0.5 }
      local token = tp.sign(odd, rsa)
      local c = assert(tp.verifier({ keys = rsa, require = { "name" } }):check(token, NOW))
      assert.are.equal("al\"i\\ce", c.sub)
      assert.are.equal("Jos\u{e9}", c.name)
      assert.are.equal(1.5, c.score)
      assert.are.equal(tp.null, c.n)
      assert.are.equal(NOW + 3600, c.exp)
      assert.are.same(tp.verify(token, rsa, { now = NOW }), c:totable())
    end)

    it("shares one header view between tokens with the same header", function()
      local v = tp.verifier { keys = rsa }
      local _, h1 = v:check(tp.sign(claims { jti = "a" }, rsa), NOW)
      local _, h2 = v:check(tp.sign(claims { jti = "b" }, rsa), NOW)
      assert.are.equal(h1, h2)
    end)
  end)

  describe("options", function()
    local errors = {
      { "no table", nil, "table expected" },
      { "no keys", {}, "keys must be a tokenpolicy.KeySet or a tokenpolicy.JwksSource, got nil" },
      { "keys of the wrong type", { keys = "x" }, "keys must be" },
      { "an unknown option", { keys = true, now = 1 }, "now" },
      { "a bad alg", { algs = { "none" } }, "algs: 'none' is not a supported signature algorithm" },
      { "a negative leeway", { leeway = -1 }, "leeway" },
      { "a non-integer leeway", { leeway = 1.5 }, "leeway" },
      { "a bad iss", { iss = 5 }, "iss" },
      { "an empty aud list", { aud = {} }, "aud" },
      { "a bad typ", { typ = 5 }, "typ" },
      { "a bad require_exp", { require_exp = "no" }, "require_exp" },
      { "a bad max_size", { max_size = 0 }, "max_size" },
      { "a bad policy", { policy = {} }, "policy must be a tokenpolicy.Policy, got table" },
      { "a bad denylist", { denylist = "x" }, "denylist must be a tokenpolicy.Denylist, got string" },
      { "a negative cache", { cache = -1 }, "cache" },
      { "a float cache", { cache = 1.5 }, "cache" },
    }
    for _, case in ipairs(errors) do
      it("raises on " .. case[1], function()
        local opts = case[2]
        if opts and opts.keys == nil and case[1] ~= "no keys" then opts.keys = rsa end
        if opts and opts.keys == true then opts.keys = rsa end
        local ok, err = pcall(tp.verifier, opts)
        assert.is_false(ok)
        assert.matches("bad argument #1 to '", err, 1, true)
        assert.matches(case[3], err, 1, true)
      end)
    end

    it("raises on a token that is not a string and on a bad now", function()
      local v = tp.verifier { keys = rsa }
      assert.has_error(function() v:check(5) end)
      assert.has_error(function() v:check("x", "now") end)
      assert.has_error(function() v:check("x", 1.5) end)
      assert.has_error(function() tp.verifier({ keys = rsa }).check({}, "x") end)
    end)

    it("prints itself", function()
      local v = tp.verifier { keys = rsa, cache = 10 }
      assert.matches("^tokenpolicy.Verifier", tostring(v))
    end)
  end)
end)
