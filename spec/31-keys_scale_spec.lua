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
end)
