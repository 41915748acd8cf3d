-- tokenpolicy.keys: JWK Sets, single JWKs and PEM into key sets.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"

-- The JWK (public part) of a PEM key, through a key set and a signed token
-- is not needed: the set's list() says what was imported.
local function only(set)
  assert.are.equal(1, #set)
  return set:list()[1]
end

describe("keys", function()
  after_each(function() collectgarbage() end)

  describe("from PEM", function()
    it("imports an SPKI RSA public key", function()
      local set = assert(tp.keys(crypto.public_of(crypto.rsa_private())))
      local key = only(set)
      assert.are.same({ kty = "RSA", bits = 2048, private = false,
        algs = { "RS256", "RS384", "RS512", "PS256", "PS384", "PS512" } }, key)
    end)

    it("imports a PKCS#8 private key as a key that can sign", function()
      local key = only(assert(tp.keys(crypto.rsa_private())))
      assert.is_true(key.private)
    end)

    it("imports a PKCS#1 RSA private key", function()
      local pem = crypto.pkcs1_of(crypto.rsa_private())
      assert.matches("BEGIN RSA PRIVATE KEY", pem)
      assert.is_true(only(assert(tp.keys(pem))).private)
    end)

    it("imports the public key of an X.509 certificate", function()
      local key = only(assert(tp.keys(crypto.certificate_of(crypto.ec_private("P-384")))))
      assert.are.same({ kty = "EC", bits = 384, private = false, algs = { "ES384" } }, key)
    end)

    it("binds each curve to its one algorithm", function()
      assert.are.same({ "ES256" }, only(assert(tp.keys(crypto.ec_private("P-256")))).algs)
      assert.are.same({ "ES384" }, only(assert(tp.keys(crypto.ec_private("P-384")))).algs)
      assert.are.same({ "ES512" }, only(assert(tp.keys(crypto.ec_private("P-521")))).algs)
    end)

    it("skips the EC PARAMETERS block written by openssl ecparam -genkey", function()
      local pem = crypto.run("openssl ecparam -name prime256v1 -genkey")
      assert.matches("EC PARAMETERS", pem)
      local set = assert(tp.keys(pem))
      assert.are.equal(1, #set)
      assert.are.same({}, set:skipped())
    end)

    it("imports every key of a bundle", function()
      local set = assert(tp.keys(crypto.public_of(crypto.rsa_private()) .. crypto.public_of(crypto.ec_private())))
      assert.are.equal(2, #set)
    end)

    it("gives PEM keys the kid option", function()
      local set = assert(tp.keys(crypto.public_of(crypto.rsa_private()), { kid = "site-2026" }))
      assert.are.same({ "site-2026" }, set:kids())
    end)

    it("refuses RSA keys under 2048 bits", function()
      local set, msg, code = tp.keys(crypto.rsa_private(1024))
      assert.is_nil(set)
      assert.are.equal("alg_not_allowed", code)
      assert.are.equal("alg_not_allowed: RSA key of 1024 bits is below the 2048-bit minimum", msg)
    end)

    it("refuses key types it cannot use, such as X25519", function()
      local _, msg, code = tp.keys(crypto.run("openssl genpkey -algorithm X25519"))
      assert.are.equal("alg_not_allowed", code)
      assert.are.equal("alg_not_allowed: PRIVATE KEY: key type or curve not supported", msg)
    end)

    it("refuses encrypted private keys without asking for a passphrase", function()
      local path = crypto.tmpfile(crypto.rsa_private())
      local pem = crypto.run("openssl pkey -aes256 -passout pass:secret -in " .. path)
      os.remove(path)
      local _, msg, code = tp.keys(pem)
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: encrypted private keys are not supported", msg)
    end)
  end)

  describe("from JWK", function()
    local rsa_public_jwk

    setup(function()
      -- The public JWK of a fresh key, assembled from the PEM's modulus.
      local path = crypto.tmpfile(crypto.rsa_private())
      local text = crypto.run("openssl rsa -noout -modulus -in " .. path)
      os.remove(path)
      local hex = text:match("Modulus=(%x+)")
      local n = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
      rsa_public_jwk = { kty = "RSA", n = tp.b64url_encode(n), e = "AQAB" }
    end)

    local function with(fields)
      local jwk = {}
      for k, v in pairs(rsa_public_jwk) do jwk[k] = v end
      for k, v in pairs(fields) do jwk[k] = v end
      return jwk
    end

    it("imports a single JWK given as JSON text", function()
      local set = assert(tp.keys(tp.json_encode(with { kid = "a" })))
      assert.are.same({ "a" }, set:kids())
      assert.is_false(only(set).private)
    end)

    it("imports a single JWK given as a Lua table", function()
      assert.are.same({ "t" }, assert(tp.keys(with { kid = "t" })):kids())
    end)

    it("imports a JWK Set in order", function()
      local set = assert(tp.keys(tp.json_encode { keys = { with { kid = "one" }, with { kid = "two" } } }))
      assert.are.equal(2, #set)
      assert.are.same({ "one", "two" }, set:kids())
    end)

    it("accepts an empty JWK Set (a provider between rotations)", function()
      local set = assert(tp.keys('{"keys": []}'))
      assert.are.equal(0, #set)
    end)

    it("limits a key that names its alg to that alg", function()
      assert.are.same({ "PS384" }, only(assert(tp.keys(with { alg = "PS384" }))).algs)
    end)

    it("skips keys it cannot use and lists why", function()
      local set = assert(tp.keys(tp.json_encode { keys = {
        with { kid = "good" },
        with { kid = "enc", use = "enc" },
        { kty = "OKP", crv = "X25519", x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", kid = "ed" },
        with { kid = "oaep", alg = "RSA-OAEP" },
        { kty = "oct", k = tp.b64url_encode(("k"):rep(16)), kid = "short" },
      } }))
      assert.are.equal(1, #set)
      assert.are.same({ "good" }, set:kids())
      assert.are.same({
        { index = 2, kid = "enc", reason = "key is for use 'enc', not signatures" },
        { index = 3, kid = "ed", reason = "OKP curve X25519 is not a signature curve (Ed25519, Ed448)" },
        { index = 4, kid = "oaep", reason = "alg RSA-OAEP is not a supported signature algorithm" },
        { index = 5, kid = "short", reason = "oct key of 128 bits fits no allowed algorithm" },
      }, set:skipped())
    end)

    it("fails a single JWK it cannot use", function()
      local set, msg, code = tp.keys(with { use = "enc" })
      assert.is_nil(set)
      assert.are.equal("alg_not_allowed", code)
      assert.are.equal("alg_not_allowed: key is for use 'enc', not signatures", msg)
    end)

    it("sizes HMAC keys: 32 bytes fit HS256 only, 64 bytes fit all three", function()
      assert.are.same({ "HS256" }, only(assert(tp.keys(crypto.hmac_jwk(("s"):rep(32))))).algs)
      assert.are.same({ "HS256", "HS384", "HS512" },
        only(assert(tp.keys(crypto.hmac_jwk(("s"):rep(64))))).algs)
    end)

    it("refuses a JWK Set whose keys member is not an array", function()
      local _, msg, code = tp.keys('{"keys": {"kty": "RSA"}}')
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: the keys member of a JWK Set must be an array", msg)
    end)

    it("refuses material that is neither JSON nor PEM", function()
      local _, msg, code = tp.keys("not a key")
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: key material is neither JSON (JWK, JWK Set) nor PEM", msg)
    end)
  end)

  describe("key set objects", function()
    it("read well in the REPL", function()
      local set = assert(tp.keys(crypto.ec_private("P-256"), { kid = "ec1" }))
      assert.are.equal("tokenpolicy.KeySet: 1 key (EC P-256 kid=ec1 private)", tostring(set))
      local two = assert(tp.keys(tp.json_encode { keys = {
        { kty = "oct", k = tp.b64url_encode(("x"):rep(32)), kid = "mac" },
        { kty = "oct", k = tp.b64url_encode(("x"):rep(8)) } } }))
      assert.are.equal("tokenpolicy.KeySet: 1 key (oct 256 bits kid=mac private), 1 skipped", tostring(two))
    end)

    it("raise on misuse", function()
      assert.has_error(function() tp.keys(42) end, "bad argument #1 to 'keys' (string or table expected, got number)")
      assert.has_error(function() tp.keys("{}", { bogus = 1 }) end,
        "bad argument #2 to 'keys' (unknown option 'bogus')")
      assert.has_error(function() tp.keys("{}", { kid = 5 }) end, "bad argument #2 to 'keys' (kid must be a string)")
      assert.has_error(function() tp.keys({}).kids({}) end)
    end)
  end)
end)
