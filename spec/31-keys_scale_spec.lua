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

    it("verifies with 10,000 keys about as fast as with one (no scan)", function()
      local one = signer(hmac_jwk(N, "kid-" .. N))
      local first = assert(tp.sign(CLAIMS, signer(hmac_jwk(1, "kid-1")), { alg = "HS256" }))
      local last = assert(tp.sign(CLAIMS, one, { alg = "HS256" }))
      local t_one = verify_micros(last, one, 2000)
      local t_first, t_last = verify_micros(first, set, 2000), verify_micros(last, set, 2000)
      -- A scan of 10,000 kids costs tens of microseconds; a lookup, nothing.
      for _, t in ipairs { t_first, t_last } do
        assert.is_true(t < 2 * t_one + 5,
          string.format("kid 1: %.1f us, kid 10000: %.1f us, a set of one key: %.1f us", t_first, t_last, t_one))
      end
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

  describe("a token whose kid chooses no key", function()
    -- Keys without a kid, and a token naming none (or a kid no key has):
    -- at most 16 fitting keys are tried, so a forged token cannot cost a
    -- verification per key of a large set.
    local function unnamed(n)
      return string.format('{"kty":"oct","k":"%s"}', secret_b64(n))
    end
    local function set_of(count)
      local entries = {}
      for i = 1, count do entries[i] = unnamed(i) end
      return assert(tp.keys(jwks(entries)))
    end
    local function token_of(n, kid)
      return assert(tp.sign(CLAIMS, signer(unnamed(n)), { alg = "HS256", kid = kid }))
    end

    it("is verified by any of 16 fitting keys", function()
      local set = set_of(16)
      for _, n in ipairs { 1, 16 } do
        assert.are.equal("alice", assert(verify(token_of(n), set)).sub)
        assert.are.equal("alice", assert(verify(token_of(n, "not-in-the-set"), set)).sub)
      end
      expect.fails("bad_signature", verify(token_of(17), set))
    end)

    it("is unknown_key when more than 16 keys fit, past the 16th", function()
      local set = set_of(17)
      assert.are.equal("alice", assert(verify(token_of(16), set)).sub)
      for _, kid in ipairs { false, "not-in-the-set" } do
        local ok, msg, code = verify(token_of(17, kid or nil), set)
        assert.is_nil(ok)
        assert.are.equal("unknown_key", code)
        assert.are.equal("unknown_key: the token names no key (kid) and more than 16 keys fit alg HS256: "
          .. "a kid is needed to choose", msg)
      end
      local v = tp.verifier { keys = set, algs = "HS256" }
      expect.fails("unknown_key", v:check(token_of(17), NOW))
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
      local set_text = oct_set(2)
      local padded = set_text:sub(1, -2) .. string.rep(" ", limit - #set_text) .. "}"
      assert.are.equal(limit, #padded)
      assert(tp.keys(padded, { max_keys = 2 }))
      local msg = expect.fails("too_large", tp.keys(padded .. " ", { max_keys = 2 }))
      assert.are.equal("too_large: key material of 81921 bytes is over the 81920-byte limit for 2 keys", msg)
    end)

    it("refuses material over 8 KiB per key it holds plus 64 KiB", function()
      local set_text = oct_set(1)
      local padded = set_text:sub(1, -2) .. string.rep(" ", 8192 + 65536 + 1 - #set_text) .. "}"
      local msg = expect.fails("too_large", tp.keys(padded))
      assert.are.equal("too_large: key material of 73729 bytes is over the 73728-byte limit for a set of 1 keys", msg)
      local huge_secret = '{"kty":"oct","k":"' .. ("A"):rep(1024 * 1024) .. '"}'
      msg = expect.fails("too_large", tp.keys(huge_secret))
      assert.are.equal("too_large: a single JWK of 1048596 bytes is over the 73728-byte limit", msg)
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

  describe("EdDSA (RFC 8037 OKP keys)", function()
    local dir
    local ed, ed448, other = {}, {}, {}  -- each: private_pem, public_pem, private_jwk, public_jwk (text)

    local function read_file(path)
      local f = assert(io.open(path, "rb"))
      local data = f:read("a")
      f:close()
      return data
    end

    -- A fresh key pair made by Node into files of dir, read into t.
    local function make(crv, t)
      assert(run(string.format("node %s okp %s %s", NODE_SIGN, crv, shell_quote(dir))))
      for _, name in ipairs { "private.pem", "public.pem", "private.jwk", "public.jwk" } do
        t[name:gsub("%.", "_")] = read_file(dir .. "/" .. name)
      end
    end

    -- JWK text with members replaced (nil values stay; false removes).
    local function jwk_with(base_json, changes)
      local members = {}
      for name, value in base_json:gmatch('"([%w_]+)":"([^"]*)"') do members[name] = value end
      for name, value in pairs(changes) do
        if value == false then members[name] = nil else members[name] = value end
      end
      local parts = {}
      for name, value in pairs(members) do
        if type(value) == "string" then
          parts[#parts + 1] = string.format('"%s":"%s"', name, value)
        else
          parts[#parts + 1] = string.format('"%s":%s', name, tostring(value))
        end
      end
      return "{" .. table.concat(parts, ",") .. "}"
    end

    local function member(jwk_json, name)
      return jwk_json:match('"' .. name .. '":"([^"]*)"')
    end

    setup(function()
      dir = expect.new_dir()
      make("Ed25519", ed)
      make("Ed448", ed448)
      make("Ed25519", other)
    end)

    teardown(function()
      expect.remove_dir(dir)
    end)

    describe("import", function()
      it("imports a public Ed25519 JWK", function()
        local set = assert(tp.keys(ed.public_jwk))
        assert.are.same({ { kty = "OKP", crv = "Ed25519", bits = 256, private = false, algs = { "EdDSA" } } },
          setmetatable(set:list(), nil))
        assert.are.equal("tokenpolicy.KeySet: 1 key (OKP Ed25519)", tostring(set))
        assert.are.equal("OKP Ed25519: EdDSA", tostring(set:list()[1]))
      end)

      it("imports a private Ed25519 JWK as a key that can sign", function()
        local set = assert(tp.keys(jwk_with(ed.private_jwk, { kid = "ed-1" })))
        assert.are.equal("OKP Ed25519 kid=ed-1 private: EdDSA", tostring(set:list()[1]))
      end)

      it("imports Ed448 JWKs", function()
        local set = assert(tp.keys(ed448.private_jwk))
        local key = set:list()[1]
        assert.are.same({ "Ed448", 456, true }, { key.crv, key.bits, key.private })
      end)

      it("imports the key pair of RFC 8037 appendix A.1", function()
        local set = assert(tp.keys('{"kty":"OKP","crv":"Ed25519",' ..
          '"d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",' ..
          '"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}'))
        assert.is_true(set:list()[1].private)
      end)

      it("imports public and private Ed25519 and Ed448 PEM", function()
        for _, pair in ipairs { ed, ed448 } do
          assert.is_false(assert(tp.keys(pair.public_pem)):list()[1].private)
          assert.is_true(assert(tp.keys(pair.private_pem)):list()[1].private)
        end
      end)

      it("imports the Ed25519 key of an X.509 certificate", function()
        write_file(dir .. "/cert-key.pem", ed.private_pem)
        local ok, cert = run("openssl req -x509 -new -key " .. shell_quote(dir .. "/cert-key.pem") ..
          " -subj /CN=tokenpolicy-test -days 1 2>/dev/null")
        assert(ok)
        local key = assert(tp.keys(cert)):list()[1]
        assert.are.same({ "OKP", "Ed25519", false }, { key.kty, key.crv, key.private })
      end)

      local x = function() return member(ed.public_jwk, "x") end
      local d = function() return member(ed.private_jwk, "d") end
      local malformed = {
        { "x of 31 bytes", function() return jwk_with(ed.public_jwk, { x = x():sub(1, 41) .. "A" }) end,
          "member x must be the 32-byte Ed25519 public key" },
        { "x of 33 bytes", function() return jwk_with(ed.public_jwk, { x = x() .. "A" }) end,
          "member x must be the 32-byte Ed25519 public key" },
        { "no x", function() return jwk_with(ed.public_jwk, { x = false }) end,
          "member x must be the 32-byte Ed25519 public key" },
        { "an Ed25519 x under Ed448", function() return jwk_with(ed.public_jwk, { crv = "Ed448" }) end,
          "member x must be the 57-byte Ed448 public key" },
        { "x with padding", function() return jwk_with(ed.public_jwk, { x = x() .. "=" }) end,
          "member x is not canonical unpadded base64url" },
        { "x in standard base64", function() return jwk_with(ed.public_jwk, { x = "+" .. x():sub(2) }) end,
          nil },
        { "x not a string", function() return jwk_with(ed.public_jwk, { x = 5 }) end, "member x is not a string" },
        { "no crv", function() return jwk_with(ed.public_jwk, { crv = false }) end, "crv is missing or not a string" },
        { "d of 31 bytes", function() return jwk_with(ed.private_jwk, { d = d():sub(1, 41) .. "A" }) end,
          "member d must be the 32-byte Ed25519 private key" },
        { "d of another key", function() return jwk_with(ed.private_jwk, { d = member(other.private_jwk, "d") }) end,
          "the private part of this OKP key does not match its public part" },
      }
      for _, case in ipairs(malformed) do
        it("refuses " .. case[1] .. " as malformed", function()
          local text = case[2]()
          local msg = expect.fails("malformed", tp.keys(text))
          if case[3] then assert.are.equal("malformed: " .. case[3], msg) end
          local set = assert(tp.keys('{"keys":[' .. text .. "," .. ed.public_jwk .. "]}"))
          assert.are.equal(1, #set)  -- in a JWK Set, the others still load
        end)
      end

      it("refuses OKP curves that do not sign (X25519) as alg_not_allowed", function()
        local msg = expect.fails("alg_not_allowed", tp.keys(jwk_with(ed.public_jwk, { crv = "X25519" })))
        assert.are.equal("alg_not_allowed: OKP curve X25519 is not a signature curve (Ed25519, Ed448)", msg)
      end)

      it("refuses an OKP JWK whose alg is not EdDSA", function()
        expect.fails("alg_not_allowed", tp.keys(jwk_with(ed.public_jwk, { alg = "ES256" })))
        assert(tp.keys(jwk_with(ed.public_jwk, { alg = "EdDSA" })))
      end)
    end)

    describe("verify and sign", function()
      it("signs with a private JWK and verifies with the public PEM, by default algs", function()
        for _, pair in ipairs { ed, ed448 } do
          local token = assert(tp.sign(CLAIMS, assert(tp.keys(pair.private_jwk))))
          assert.are.equal("EdDSA", tp.decode(token).header.alg)
          local claims, header = tp.verify(token, assert(tp.keys(pair.public_pem)), { now = NOW })
          assert.are.equal("alice", claims and claims.sub)
          assert.are.equal("EdDSA", header.alg)
        end
      end)

      it("finds the key by kid among others", function()
        local signer_set = assert(tp.keys(jwk_with(ed.private_jwk, { kid = "ed" })))
        local token = assert(tp.sign(CLAIMS, signer_set))
        local set = assert(tp.keys(jwks { hmac_jwk(1, "hs"), jwk_with(other.public_jwk, { kid = "other" }),
                                          jwk_with(ed.public_jwk, { kid = "ed" }) }))
        assert(tp.verify(token, set, { now = NOW }))
      end)

      it("refuses a changed or cut signature", function()
        local token = assert(tp.sign(CLAIMS, assert(tp.keys(ed.private_pem))))
        local set = assert(tp.keys(ed.public_pem))
        local head, sig = token:match("^(.*%.)(.*)$")
        local flipped = head .. (sig:sub(1, 1) == "A" and "B" or "A") .. sig:sub(2)
        expect.fails("bad_signature", tp.verify(flipped, set, { now = NOW }))
        expect.fails("bad_signature", tp.verify(head .. sig:sub(1, 84), set, { now = NOW }))  -- 63 bytes
        expect.fails("bad_signature", tp.verify(token, assert(tp.keys(other.public_pem)), { now = NOW }))
      end)

      it("verifies a token signed by Node's crypto", function()
        local payload = string.format('{"sub":"alice","exp":%d}', NOW + 60)
        local ok, token = run(string.format("node %s sign EdDSA %s %s kid-n", NODE_SIGN,
          shell_quote(dir .. "/private.pem"), shell_quote(payload)))
        assert(ok)
        local set = assert(tp.keys(jwk_with(other.public_jwk, { kid = "kid-n" })))
        local claims = assert(tp.verify(token, set, { now = NOW }))
        assert.are.equal("alice", claims.sub)
      end)

      it("signs tokens Node's crypto verifies", function()
        local token = assert(tp.sign(CLAIMS, assert(tp.keys(other.private_jwk))))
        local ok, out = run(string.format("node %s verify EdDSA %s %s", NODE_SIGN,
          shell_quote(dir .. "/public.pem"), shell_quote(token)))
        assert.is_true(ok, out)
        assert.matches('"sub":"alice"', out)
      end)

      it("keeps EdDSA and other keys apart (alg_not_allowed)", function()
        local ed_set = assert(tp.keys(jwk_with(ed.private_jwk, { kid = "k" })))
        local ec_pem = select(2, run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null"))
        local ec_set = assert(tp.keys(ec_pem, { kid = "k" }))
        expect.fails("alg_not_allowed", tp.sign(CLAIMS, ed_set, { alg = "ES256" }))
        expect.fails("alg_not_allowed", tp.sign(CLAIMS, ec_set, { alg = "EdDSA" }))
        local ed_token, ec_token = assert(tp.sign(CLAIMS, ed_set)), assert(tp.sign(CLAIMS, ec_set))
        expect.fails("alg_not_allowed", tp.verify(ed_token, ec_set, { now = NOW }))
        expect.fails("alg_not_allowed", tp.verify(ec_token, ed_set, { now = NOW }))
        local msg = expect.fails("alg_not_allowed", tp.verify(ed_token, ed_set, { now = NOW, algs = "RS256" }))
        assert.are.equal("alg_not_allowed: alg EdDSA is not in the allow-list", msg)
        assert(tp.verify(ed_token, ed_set, { now = NOW, algs = { "EdDSA" } }))
      end)

      it("honours key_ops", function()
        local function with_ops(base, ops)
          return (jwk_with(base, { key_ops = "OPS" }):gsub('"OPS"', ops))
        end
        local verify_only = assert(tp.keys(with_ops(ed.private_jwk, '["verify"]')))
        local msg = expect.fails("unknown_key", tp.sign(CLAIMS, verify_only))
        assert.are.equal("unknown_key: the key set holds no private key whose key_ops allow sign", msg)
        local sign_only = assert(tp.keys(with_ops(ed.private_jwk, '["sign"]')))
        local token = assert(tp.sign(CLAIMS, sign_only))
        expect.fails("unknown_key", tp.verify(token, sign_only, { now = NOW }))
        assert(tp.verify(token, verify_only, { now = NOW }))
        expect.fails("alg_not_allowed", tp.keys(with_ops(ed.public_jwk, '["sign"]')))
      end)
    end)
  end)
end)
