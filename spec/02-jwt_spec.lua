-- decode, verify and sign: the JWT core.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"

local NOW = 1800000000

local rsa, rsa_public, ec, mac
local function setup_keys()
  rsa = assert(tp.keys(crypto.rsa_private(), { kid = "rsa-1" }))
  rsa_public = assert(tp.keys(crypto.public_of(crypto.rsa_private()), { kid = "rsa-1" }))
  ec = assert(tp.keys(crypto.ec_private("P-256"), { kid = "ec-1" }))
  mac = assert(tp.keys(crypto.hmac_jwk(("m"):rep(32), "mac-1")))
end

local function claims(extra)
  local c = { iss = "https://idp.example", sub = "alice", aud = "rucio", iat = NOW - 10, exp = NOW + 3600 }
  for k, v in pairs(extra or {}) do
    if v == "nil" then c[k] = nil else c[k] = v end
  end
  return c
end

local fails = require("helpers.expect").fails

describe("decode", function()
  setup(setup_keys)
  after_each(function() collectgarbage() end)

  it("returns header, claims, signing input and raw signature", function()
    local token = tp.sign(claims { scope = "openid profile" }, rsa)
    local jwt = assert(tp.decode(token))
    assert.are.same({ alg = "RS256", typ = "JWT", kid = "rsa-1" }, jwt.header)
    assert.are.equal("alice", jwt.claims.sub)
    assert.are.equal("integer", math.type(jwt.claims.exp))
    local h, p, s = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    assert.are.equal(h .. "." .. p, jwt.signing_input)
    assert.are.equal(256, #jwt.signature)
    assert.are.equal(s, tp.b64url_encode(jwt.signature))
  end)

  it("does not check the signature or the times", function()
    local token = tp.sign(claims { exp = 1 }, rsa)
    assert.are.equal(1, tp.decode(token:sub(1, -3) .. "AA").claims.exp)
  end)

  it("accepts an unsigned token for inspection", function()
    local token = tp.b64url_encode('{"alg":"none"}') .. "." .. tp.b64url_encode('{"sub":"x"}') .. "."
    local jwt = assert(tp.decode(token))
    assert.are.equal("none", jwt.header.alg)
    assert.are.equal("", jwt.signature)
  end)

  it("maps JSON null to tokenpolicy.null", function()
    local token = tp.sign(claims { act = tp.null }, rsa)
    assert.are.equal(tp.null, tp.decode(token).claims.act)
  end)

  it("honours max_size", function()
    local token = tp.sign(claims(), rsa)
    fails("too_large", tp.decode(token, { max_size = #token - 1 }))
    assert.is_table(tp.decode(token, { max_size = #token }))
  end)

  it("reads well in the REPL", function()
    local now = os.time()
    local token = tp.sign({ iss = "https://idp.example", sub = "alice", aud = { "rucio", "fts" },
      scope = "storage.read:/", iat = now - 120, exp = now + 47 * 60 + 30 }, rsa, { typ = "at+jwt" })
    local text = tostring(tp.decode(token))
    assert.matches("^JWT RS256, kid rsa%-1, typ at%+jwt\n", text)
    assert.matches("\n  iss    https://idp.example\n", text, 1, true)
    assert.matches("\n  aud    rucio, fts\n", text, 1, true)
    assert.matches("\n  scope  storage.read:/\n", text, 1, true)
    assert.matches("\n  iat    %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC %(2m ago%)", text)
    assert.matches("\n  exp    [%d: -]+ UTC %(expires in 47m%d*s?%)$", text)
    local old = tostring(tp.decode(tp.sign({ exp = now - 3 * 3600 - 5 }, rsa)))
    assert.matches("%(expired 3h5s ago%)$", old)
  end)

  it("replaces control characters in what it shows", function()
    local text = tostring(tp.decode(tp.sign({ sub = "a\27[31mb" }, rsa)))
    assert.matches("sub    a?[31mb", text, 1, true)
  end)

  it("raises on a non-string token or an unknown option", function()
    assert.has_error(function() tp.decode(42) end, "bad argument #1 to 'decode' (string expected, got number)")
    assert.has_error(function() tp.decode("a.b.c", { maxsize = 1 }) end,
      "bad argument #2 to 'decode' (unknown option 'maxsize')")
  end)
end)

describe("verify", function()
  setup(setup_keys)
  after_each(function() collectgarbage() end)

  it("returns the claims and the header", function()
    local c, h = tp.verify(tp.sign(claims(), rsa), rsa_public, { now = NOW })
    assert.are.same(claims(), c)
    assert.are.same({ alg = "RS256", typ = "JWT", kid = "rsa-1" }, h)
  end)

  describe("algorithms", function()
    it("accepts RS, PS and ES by default and never HS", function()
      assert.is_table(tp.verify(tp.sign(claims(), rsa, { alg = "PS512" }), rsa, { now = NOW }))
      assert.is_table(tp.verify(tp.sign(claims(), ec), ec, { now = NOW }))
      local msg = fails("alg_not_allowed", tp.verify(tp.sign(claims(), mac), mac, { now = NOW }))
      assert.are.equal("alg_not_allowed: alg HS256 is not in the allow-list", msg)
    end)

    it("follows the algs allow-list", function()
      local token = tp.sign(claims(), rsa, { alg = "RS384" })
      fails("alg_not_allowed", tp.verify(token, rsa, { now = NOW, algs = { "RS256" } }))
      assert.is_table(tp.verify(token, rsa, { now = NOW, algs = { "RS384" } }))
      assert.is_table(tp.verify(tp.sign(claims(), mac), mac, { now = NOW, algs = { "HS256" } }))
    end)

    it("refuses none whatever the allow-list", function()
      assert.has_error(function() tp.verify("a.b.c", rsa, { algs = { "none" } }) end)
    end)

    it("binds the algorithm to the key type", function()
      local token = tp.sign(claims(), ec)
      local msg = fails("alg_not_allowed", tp.verify(token, assert(tp.keys(crypto.public_of(crypto.rsa_private())))
        , { now = NOW }))
      assert.are.equal("alg_not_allowed: no key fits alg ES256", msg)
      local msg2 = fails("alg_not_allowed", tp.verify(tp.sign(claims(), rsa), assert(tp.keys(crypto.ec_private(),
        { kid = "rsa-1" })), { now = NOW }))
      assert.are.equal("alg_not_allowed: no key with kid rsa-1 fits alg RS256", msg2)
    end)

    it("binds ES384 to P-384", function()
      local p384 = assert(tp.keys(crypto.ec_private("P-384")))
      local token = tp.sign(claims(), p384)
      assert.are.equal("ES384", tp.decode(token).header.alg)
      fails("alg_not_allowed", tp.verify(token, assert(tp.keys(crypto.ec_private("P-256"))), { now = NOW }))
    end)
  end)

  describe("key selection", function()
    local other = function() return assert(tp.keys(crypto.rsa_private(3072), { kid = "rsa-2" })) end

    it("picks the key named by kid and tries no other", function()
      local right = crypto.rsa_public_jwk(crypto.rsa_private(), "rsa-1")
      local wrong = crypto.rsa_public_jwk(crypto.rsa_private(3072), "rsa-2")
      local token = tp.sign(claims(), rsa)
      assert.is_table(tp.verify(token, assert(tp.keys { keys = { wrong, right } }), { now = NOW }))
      right.kid, wrong.kid = "rsa-2", "rsa-1"
      fails("bad_signature", tp.verify(token, assert(tp.keys { keys = { wrong, right } }), { now = NOW }))
    end)

    it("reports a kid no key has as unknown_key", function()
      local msg = fails("unknown_key", tp.verify(tp.sign(claims(), other()), rsa, { now = NOW }))
      assert.are.equal("unknown_key: no key has kid rsa-2", msg)
    end)

    it("falls back to keys without a kid when no key has the token's kid", function()
      local anonymous = assert(tp.keys(crypto.public_of(crypto.rsa_private())))
      assert.is_table(tp.verify(tp.sign(claims(), rsa), anonymous, { now = NOW }))
    end)

    it("tries every fitting key for a token without kid", function()
      local anonymous_signer = assert(tp.keys(crypto.rsa_private()))
      local no_kid = tp.sign(claims(), anonymous_signer)
      assert.is_nil(tp.decode(no_kid).header.kid)
      local set = assert(tp.keys(crypto.public_of(crypto.rsa_private(3072)) .. crypto.public_of(crypto.rsa_private())))
      assert.is_table(tp.verify(no_kid, set, { now = NOW }))
    end)

    it("reports an empty key set as unknown_key", function()
      local msg = fails("unknown_key", tp.verify(tp.sign(claims(), assert(tp.keys(crypto.rsa_private()))),
        assert(tp.keys('{"keys":[]}')), { now = NOW }))
      assert.are.equal("unknown_key: the key set has no key for alg RS256", msg)
    end)

    it("gives bad_signature when the right kind of key does not verify", function()
      local stranger = assert(tp.keys(crypto.rsa_private(3072), { kid = "rsa-1" }))
      local msg = fails("bad_signature", tp.verify(tp.sign(claims(), stranger), rsa, { now = NOW }))
      assert.are.equal("bad_signature: the signature does not verify", msg)
    end)
  end)

  describe("time claims", function()
    local token
    setup(function() token = tp.sign(claims { nbf = NOW, iat = NOW, exp = NOW + 100 }, rsa) end)

    -- Boundaries: valid while now < exp + leeway; not yet valid while
    -- now + leeway < nbf; issued in the future when iat > now + leeway.
    for _, case in ipairs {
      { "one second before exp, no leeway", NOW + 99, 0, nil },
      { "at exp, no leeway", NOW + 100, 0, "expired" },
      { "at exp, inside the default leeway", NOW + 100, nil, nil },
      { "the last second of the leeway", NOW + 159, 60, nil },
      { "at exp + leeway", NOW + 160, 60, "expired" },
      { "at nbf", NOW, 0, nil },
      { "one second before nbf, no leeway", NOW - 1, 0, "not_yet_valid" },
      { "sixty seconds before nbf, leeway 60", NOW - 60, 60, nil },
      { "sixty-one seconds before nbf, leeway 60", NOW - 61, 60, "not_yet_valid" },
    } do
      it(case[1] .. (case[4] and " is " .. case[4] or " is valid"), function()
        local c, msg, code = tp.verify(token, rsa, { now = case[2], leeway = case[3] })
        if case[4] then
          assert.is_nil(c)
          assert.are.equal(case[4], code, msg)
        else
          assert.is_table(c, msg)
        end
      end)
    end

    it("checks nbf before iat", function()
      local t = tp.sign(claims { nbf = NOW + 500, iat = NOW + 500 }, rsa)
      local msg = fails("not_yet_valid", tp.verify(t, rsa, { now = NOW, leeway = 0 }))
      assert.are.equal("not_yet_valid: valid only in 8m20s", msg)
    end)

    it("says how long ago a token expired", function()
      local msg = fails("expired", tp.verify(tp.sign(claims { exp = NOW - 7200 }, rsa), rsa, { now = NOW, leeway = 0 }))
      assert.are.equal("expired: expired 2h ago", msg)
    end)

    it("requires exp unless told otherwise", function()
      local t = tp.sign(claims { exp = "nil" }, rsa)
      assert.are.equal("missing_claim: exp is required", fails("missing_claim", tp.verify(t, rsa, { now = NOW })))
      assert.is_table(tp.verify(t, rsa, { now = NOW, require_exp = false }))
    end)

    it("accepts fractional NumericDates, rounding toward the stricter side", function()
      -- exp 2.5 counts as 2 and nbf 0.5 as 1: valid only at second 1.
      local t = tp.sign(claims { exp = NOW + 2.5, nbf = NOW + 0.5 }, rsa)
      fails("not_yet_valid", tp.verify(t, rsa, { now = NOW, leeway = 0 }))
      assert.is_table(tp.verify(t, rsa, { now = NOW + 1, leeway = 0 }))
      fails("expired", tp.verify(t, rsa, { now = NOW + 2, leeway = 0 }))
    end)

    it("refuses times that are not numbers", function()
      local msg = fails("malformed", tp.verify(tp.sign(claims { exp = "tomorrow" }, rsa), rsa, { now = NOW }))
      assert.are.equal("malformed: exp is not a number", msg)
    end)

    it("survives times at the integer limits", function()
      fails("expired", tp.verify(tp.sign(claims { exp = math.mininteger, iat = "nil" }, rsa), rsa,
        { now = NOW, leeway = math.maxinteger }))
      assert.is_table(tp.verify(tp.sign(claims { exp = math.maxinteger }, rsa), rsa,
        { now = math.maxinteger - 1, leeway = math.maxinteger }))
    end)
  end)

  describe("claims", function()
    it("checks iss against a string or a list", function()
      local t = tp.sign(claims(), rsa)
      assert.is_table(tp.verify(t, rsa, { now = NOW, iss = "https://idp.example" }))
      assert.is_table(tp.verify(t, rsa, { now = NOW, iss = { "https://a", "https://idp.example" } }))
      local msg = fails("bad_issuer", tp.verify(t, rsa, { now = NOW, iss = "https://idp.example/" }))
      assert.are.equal("bad_issuer: issuer https://idp.example is not accepted", msg)
      fails("missing_claim", tp.verify(tp.sign(claims { iss = "nil" }, rsa), rsa, { now = NOW, iss = "x" }))
    end)

    it("accepts any audience match, string or array", function()
      local multi = tp.sign(claims { aud = { "fts", "rucio" } }, rsa)
      assert.is_table(tp.verify(multi, rsa, { now = NOW, aud = "rucio" }))
      assert.is_table(tp.verify(multi, rsa, { now = NOW, aud = { "x", "fts" } }))
      fails("bad_audience", tp.verify(multi, rsa, { now = NOW, aud = "dcache" }))
      fails("bad_audience", tp.verify(tp.sign(claims { aud = 5 }, rsa), rsa, { now = NOW, aud = "5" }))
      fails("missing_claim", tp.verify(tp.sign(claims { aud = "nil" }, rsa), rsa, { now = NOW, aud = "rucio" }))
    end)

    it("compares typ as a media type", function()
      local t = tp.sign(claims(), rsa, { typ = "application/AT+JWT" })
      assert.is_table(tp.verify(t, rsa, { now = NOW, typ = "at+jwt" }))
      local msg = fails("bad_type", tp.verify(t, rsa, { now = NOW, typ = "JWT" }))
      assert.are.equal("bad_type: typ application/AT+JWT is not accepted", msg)
    end)

    it("requires the listed claims", function()
      local t = tp.sign(claims(), rsa)
      assert.is_table(tp.verify(t, rsa, { now = NOW, require = { "sub", "iat" } }))
      local msg = fails("missing_claim", tp.verify(t, rsa, { now = NOW, require = { "sub", "jti" } }))
      assert.are.equal("missing_claim: jti is required", msg)
    end)

    it("checks the signature before the claims", function()
      local t = tp.sign(claims { exp = 1 }, assert(tp.keys(crypto.rsa_private(3072), { kid = "rsa-1" })))
      fails("bad_signature", tp.verify(t, rsa, { now = NOW }))
    end)

    it("refuses crit", function()
      local t = tp.sign(claims(), rsa, { header = { crit = { "exp" } } })
      fails("unsupported_crit", tp.verify(t, rsa, { now = NOW }))
    end)
  end)

  it("leaves no error on the OpenSSL error queue after a failure", function()
    local stranger = assert(tp.keys(crypto.run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"),
      { kid = "ec-1" }))
    fails("bad_signature", tp.verify(tp.sign(claims(), stranger), ec, { now = NOW }))
    assert.is_false(tp._openssl_error_pending())
    fails("malformed", tp.keys("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))
    assert.is_false(tp._openssl_error_pending())
  end)

  it("raises on misuse, naming the argument", function()
    local t = tp.sign(claims(), rsa)
    assert.has_error(function() tp.verify(nil, rsa) end, "bad argument #1 to 'verify' (string expected, got nil)")
    assert.has_error(function() tp.verify(t, {}) end)
    assert.has_error(function() tp.verify(t, rsa, { leway = 5 }) end,
      "bad argument #3 to 'verify' (unknown option 'leway')")
    assert.has_error(function() tp.verify(t, rsa, { leeway = -1 }) end,
      "bad argument #3 to 'verify' (leeway must be an integer of at least 0)")
    assert.has_error(function() tp.verify(t, rsa, { algs = { "RS256", "XX999" } }) end)
    assert.has_error(function() tp.verify(t, rsa, { aud = { 1 } }) end,
      "bad argument #3 to 'verify' (aud must be a string or a non-empty list of strings)")
    assert.has_error(function() tp.verify(t, rsa, { now = "today" }) end)
  end)
end)

describe("sign", function()
  setup(setup_keys)
  after_each(function() collectgarbage() end)

  it("defaults the alg from the key", function()
    assert.are.equal("RS256", tp.decode(tp.sign({}, rsa)).header.alg)
    assert.are.equal("ES256", tp.decode(tp.sign({}, ec)).header.alg)
    assert.are.equal("HS256", tp.decode(tp.sign({}, mac)).header.alg)
    assert.are.equal("ES512", tp.decode(tp.sign({}, assert(tp.keys(crypto.ec_private("P-521"))))).header.alg)
  end)

  it("puts typ, kid and extra header members in the header", function()
    local h = tp.decode(tp.sign({}, rsa, { typ = "at+jwt", kid = "rsa-1", header = { x5t = "abc" } })).header
    assert.are.same({ alg = "RS256", typ = "at+jwt", kid = "rsa-1", x5t = "abc" }, h)
  end)

  it("needs a private key", function()
    local msg = fails("unknown_key", tp.sign({}, rsa_public))
    assert.are.equal("unknown_key: the key set holds no private key", msg)
  end)

  it("refuses an alg the key cannot make", function()
    local msg = fails("alg_not_allowed", tp.sign({}, ec, { alg = "ES384" }))
    assert.are.equal("alg_not_allowed: no private key in the set fits alg ES384", msg)
    fails("alg_not_allowed", tp.sign({}, rsa, { alg = "HS256" }))
  end)

  it("raises on misuse", function()
    assert.has_error(function() tp.sign("claims", rsa) end)
    assert.has_error(function() tp.sign({ 1, 2 }, rsa) end,
      "bad argument #1 to 'sign' (claims must be a table with string keys)")
    assert.has_error(function() tp.sign({}, rsa, { alg = "none" }) end,
      "bad argument #3 to 'sign' (alg 'none' is not a supported signature algorithm)")
    assert.has_error(function() tp.sign({}, rsa, { header = { alg = "HS256" } }) end)
    assert.has_error(function() tp.sign({ f = print }, rsa) end,
      "bad argument #1 to 'sign' (function values cannot be encoded)")
  end)
end)
