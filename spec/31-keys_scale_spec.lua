-- Keys at gateway scale: key sets indexed by kid, a cap on the number of
-- keys instead of on the bytes of key material, and EdDSA (RFC 8037).
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local NOW = 1767225600  -- 2026-01-01 00:00:00 UTC
local CLAIMS = { sub = "alice", iat = NOW, exp = NOW + 3600 }
local NODE_SIGN = "spec/helpers/node_sign.js"

-- A distinct 32-byte HMAC secret per n, as base64url: 42 digits (digits
-- are base64url characters) and an "A", whose low bits 43 characters leave
-- over must be zero.
local function secret_b64(n)
  return string.format("%042dA", n)
end

local function hmac_jwk(n, kid)
  return string.format('{"kty":"oct","kid":"%s","k":"%s"}', kid, secret_b64(n))
end

local function jwks(entries)
  return '{"keys":[' .. table.concat(entries, ",") .. "]}"
end

-- The key set holding only the key of JWK text, to sign with.
local function signer(jwk_text)
  return assert(tp.keys(jwk_text))
end

local function verify(token, set, algs)
  return tp.verify(token, set, { algs = algs or "HS256", now = NOW })
end

local function run(command)
  local pipe = assert(io.popen(command, "r"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok, out
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- Best of five: the microseconds one verify of token takes.
local function verify_micros(token, set, n)
  local best = math.huge
  for _ = 1, 5 do
    local t0 = os.clock()
    for _ = 1, n do verify(token, set) end
    best = math.min(best, (os.clock() - t0) / n * 1e6)
  end
  return best
end

describe("keys at gateway scale", function()
  after_each(function() collectgarbage() end)

  describe("the kid index", function()
    local N = 10000
    local set

    setup(function()
      local entries = {}
      for i = 1, N do entries[i] = hmac_jwk(i, "kid-" .. i) end
      set = assert(tp.keys(jwks(entries)))
    end)

    it("finds the first, a middle and the last of 10,000 kids", function()
      for _, i in ipairs { 1, 5000, N } do
        local token = assert(tp.sign(CLAIMS, signer(hmac_jwk(i, "kid-" .. i)), { alg = "HS256" }))
        local claims = assert(verify(token, set))
        assert.are.equal("alice", claims.sub)
      end
    end)

    it("finds every one of 10,000 kids", function()
      local found = 0
      for i = 1, N do
        local token = tp.sign(CLAIMS, signer(hmac_jwk(i, "kid-" .. i)), { alg = "HS256" })
        if verify(token, set) then found = found + 1 end
      end
      assert.are.equal(N, found)
    end)

    it("verifies the last kid about as fast as the first (no scan)", function()
      local first = assert(tp.sign(CLAIMS, signer(hmac_jwk(1, "kid-1")), { alg = "HS256" }))
      local last = assert(tp.sign(CLAIMS, signer(hmac_jwk(N, "kid-" .. N)), { alg = "HS256" }))
      local t_first, t_last = verify_micros(first, set, 2000), verify_micros(last, set, 2000)
      -- A scan of 10,000 kids costs tens of microseconds; a lookup, nothing.
      assert.is_true(t_last < 2 * t_first + 5,
        string.format("last kid %.1f us, first kid %.1f us", t_last, t_first))
    end)

    it("says a kid the set does not have is unknown", function()
      local token = assert(tp.sign(CLAIMS, signer(hmac_jwk(1, "kid-absent")), { alg = "HS256" }))
      expect.fails("unknown_key", verify(token, set))
    end)

    it("does not match a kid that is a prefix or an extension of another", function()
      for _, kid in ipairs { "kid-1000", "kid-10", "kid-100000", "kid-" } do
        local token = assert(tp.sign(CLAIMS, signer(hmac_jwk(1, kid)), { alg = "HS256" }))
        if kid == "kid-1000" or kid == "kid-10" then
          expect.fails("bad_signature", verify(token, set))  -- the kid's own key, another secret
        else
          expect.fails("unknown_key", verify(token, set))
        end
      end
    end)

    describe("keys sharing a kid", function()
      -- Three keys with kid "shared", among other kids and after many others.
      local shared
      setup(function()
        local entries = {}
        for i = 1, 1000 do entries[#entries + 1] = hmac_jwk(i, "other-" .. i) end
        entries[#entries + 1] = hmac_jwk(2001, "shared")
        entries[#entries + 1] = hmac_jwk(2002, "between")
        entries[#entries + 1] = hmac_jwk(2003, "shared")
        for i = 1, 1000 do entries[#entries + 1] = hmac_jwk(3000 + i, "more-" .. i) end
        entries[#entries + 1] = hmac_jwk(2004, "shared")
        shared = assert(tp.keys(jwks(entries)))
      end)

      it("tries every key of that kid, whichever signed", function()
        for _, n in ipairs { 2001, 2003, 2004 } do
          local token = assert(tp.sign(CLAIMS, signer(hmac_jwk(n, "shared")), { alg = "HS256" }))
          assert(verify(token, shared))
        end
      end)

      it("tries no key of another kid", function()
        local token = assert(tp.sign(CLAIMS, signer(hmac_jwk(2002, "shared")), { alg = "HS256" }))
        expect.fails("bad_signature", verify(token, shared))
      end)

      it("signs with the first of them in set order", function()
        local token = assert(tp.sign(CLAIMS, shared, { alg = "HS256", kid = "shared" }))
        assert(verify(token, signer(hmac_jwk(2001, "shared"))))
        expect.fails("bad_signature", verify(token, signer(hmac_jwk(2003, "shared"))))
      end)
    end)

    it("indexes kids given to PEM keys by the kid option", function()
      local pem = select(2, run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null"))
      local pem_set = assert(tp.keys(pem, { kid = "pem-kid" }))
      local token = assert(tp.sign(CLAIMS, pem_set))
      assert(verify(token, pem_set, "ES256"))
    end)
  end)

  describe("the cap on the number of keys", function()
    local function oct_set(n)
      local entries = {}
      for i = 1, n do entries[i] = hmac_jwk(i, "c" .. i) end
      return jwks(entries)
    end

    it("loads 20,000 keys by default, and refuses 20,001", function()
      local set = assert(tp.keys(oct_set(20000)))
      assert.are.equal(20000, #set)
      local msg = expect.fails("too_large", tp.keys(oct_set(20001)))
      assert.are.equal("too_large: a JWK Set of 20001 keys is over the limit of 20000 keys", msg)
    end)

    it("takes the cap from max_keys", function()
      assert.are.equal(3, #assert(tp.keys(oct_set(3), { max_keys = 3 })))
      expect.fails("too_large", tp.keys(oct_set(4), { max_keys = 3 }))
      assert.are.equal(25000, #assert(tp.keys(oct_set(25000), { max_keys = 25000 })))
    end)

    it("caps PEM blocks too", function()
      local pem = select(2, run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null"))
      assert.are.equal(2, #assert(tp.keys(pem .. pem, { max_keys = 2 })))
      local msg = expect.fails("too_large", tp.keys(pem .. pem .. pem, { max_keys = 2 }))
      assert.are.equal("too_large: 3 PEM blocks are over the limit of 2 keys", msg)
    end)

    it("caps a JWK Set given as a Lua table", function()
      local keys = {}
      for i = 1, 3 do keys[i] = { kty = "oct", kid = "t" .. i, k = secret_b64(i) } end
      expect.fails("too_large", tp.keys({ keys = keys }, { max_keys = 2 }))
    end)

    it("refuses material over 8 KiB per allowed key plus 64 KiB before parsing it", function()
      local limit = 2 * 8192 + 65536
      local padded = '{"keys":[]' .. string.rep(" ", limit - 11) .. "}"
      assert.are.equal(limit, #padded)
      assert(tp.keys(padded, { max_keys = 2 }))
      local msg = expect.fails("too_large", tp.keys(padded .. " ", { max_keys = 2 }))
      assert.are.equal("too_large: key material of 81921 bytes is over the 81920-byte limit for 2 keys", msg)
    end)

    it("no longer refuses key material over 1 MiB", function()
      local set = assert(tp.keys(oct_set(20000)))
      assert.is_true(#oct_set(20000) > 1024 * 1024)
      assert.are.equal(20000, #set)
    end)

    it("rejects a max_keys that is not a count", function()
      for _, bad in ipairs { 0, -1, 1.5, "10", 1000001 } do
        assert.has_error(function() tp.keys(oct_set(1), { max_keys = bad }) end)
      end
    end)
  end)

  describe("10,000-key JWKS", function()
    -- Generating 10,000 RSA keys takes minutes: 16 distinct RSA keys (and
    -- 500 distinct EC keys) are reused under 10,000 kids, which costs the
    -- import exactly what distinct keys cost.
    local function node_jwks(kty, distinct)
      local parts = {}
      for first = 1, 10000, 2000 do
        local ok, out = run(string.format("node %s jwks %s 2000 %d %d", NODE_SIGN, kty,
          math.max(1, distinct // 5), first))
        assert(ok and out ~= "", "node could not make keys")
        parts[#parts + 1] = out
      end
      return jwks(parts)
    end

    for _, case in ipairs { { "RSA", 16, { "RS256", "RS384", "RS512", "PS256", "PS384", "PS512" } },
                            { "EC", 500, { "ES256" } } } do
      it("loads 10,000 " .. case[1] .. " public keys and finds the last kid", function()
        local text = node_jwks(case[1], case[2])
        local t0 = os.clock()
        local set = assert(tp.keys(text))
        local seconds = os.clock() - t0
        assert.are.equal(10000, #set)
        assert.are.same({}, set:skipped())
        assert.are.same(case[3], set:list()[10000].algs)
        assert.are.equal("k10000", set:list()[10000].kid)
        assert.is_true(seconds < 10, string.format("took %.2f s", seconds))
      end)
    end
  end)
end)
