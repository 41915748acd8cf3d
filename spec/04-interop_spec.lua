-- Interoperability: tokens written by other JOSE implementations verify
-- here, and tokens written here verify elsewhere.
--
-- The evidence comes in three kinds, most independent first:
--
--   1. the worked examples RFC 7515 publishes in its Appendix A, checked
--      against the keys published with them;
--   2. tokens assembled by hand from raw signatures made by the openssl
--      command line tool and by Node's crypto module
--      (spec/helpers/node_sign.js, which uses no JOSE library), and tokens
--      made by tp.sign checked by Node;
--   3. round trips through tp.sign and tp.verify for every algorithm.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"

-- One fixed clock for everything but the RFC examples, which carry their own.
local NOW = 1700000000

-- ---------------------------------------------------------------------------
-- Small helpers

-- Asserts that a call returned the fail triple nil, "code: message", code.
local function assert_fails(code, value, message, got_code)
  assert.is_nil(value)
  assert.are.equal(code, got_code, message)
  assert.matches("^" .. code .. ": ", message)
end

-- Asserts that every number in `actual` has the Lua number subtype of the
-- one at the same place in `expected` (assert.same compares 1 == 1.0).
local function assert_same_number_types(expected, actual, path)
  path = path or "claims"
  if type(expected) == "number" then
    assert.are.equal(math.type(expected), math.type(actual), path .. " changed its number type")
  elseif type(expected) == "table" then
    for k, v in pairs(expected) do
      assert_same_number_types(v, actual[k], path .. "." .. tostring(k))
    end
  end
end

local function shell_quote(s)
  return "'" .. s:gsub("'", [['\'']]) .. "'"
end

-- Runs a shell command; returns its output and whether it exited with 0.
local function capture(command)
  local pipe = assert(io.popen(command .. " 2>&1", "r"))
  local out = pipe:read("a")
  return out, pipe:close() == true
end

-- A temporary file holding `content`, removed after the current test.
local temporary = {}
local function tmpfile(content)
  local path = crypto.tmpfile(content)
  temporary[#temporary + 1] = path
  return path
end

-- The directory of this spec file, so the Node helper is found from any
-- working directory.
local SPEC_DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local NODE_SIGN = SPEC_DIR .. "/helpers/node_sign.js"

-- Runs spec/helpers/node_sign.js: `mode` is "sign" or "verify".
local function node(mode, alg, key_path, data, kid)
  return capture(("node %s %s %s %s %s %s"):format(shell_quote(NODE_SIGN), mode, alg,
    shell_quote(key_path), shell_quote(data), kid and shell_quote(kid) or ""))
end

local function hex_to_bytes(hex)
  return (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

-- The bytes of a colon-separated hex block that the openssl CLI prints
-- under a label line ("Modulus:", "pub:") in `openssl pkey -text`.
local function hex_block(text, label)
  local hex, inside = {}, false
  for line in text:gmatch("[^\n]+") do
    if inside then
      if not line:match("^%s+[%x:]+$") then break end
      hex[#hex + 1] = line:gsub("[%s:]", "")
    elseif line == label then
      inside = true
    end
  end
  return hex_to_bytes(table.concat(hex))
end

-- The public JWK (RFC 7518 sections 6.2.1 and 6.3.1) of an SPKI PEM, read
-- from the openssl CLI's text dump of the key rather than from tokenpolicy.
local function jwk_of(public_pem)
  local path = tmpfile(public_pem)
  local text = crypto.run("openssl pkey -pubin -noout -text -in " .. path)
  local curve = text:match("NIST CURVE: (P%-%d+)")
  if curve then
    local width = ({ ["P-256"] = 32, ["P-384"] = 48, ["P-521"] = 66 })[curve]
    local point = hex_block(text, "pub:")
    assert(#point == 1 + 2 * width and point:byte(1) == 4, "expected an uncompressed point")
    return { kty = "EC", crv = curve,
             x = tp.b64url_encode(point:sub(2, 1 + width)),
             y = tp.b64url_encode(point:sub(2 + width)) }
  end
  local modulus = hex_block(text, "Modulus:"):gsub("^\0", "")
  local exponent = math.tointeger(tonumber(text:match("Exponent: (%d+)")))
  local e = ""
  while exponent > 0 do
    e = string.char(exponent % 256) .. e
    exponent = exponent // 256
  end
  return { kty = "RSA", n = tp.b64url_encode(modulus), e = tp.b64url_encode(e) }
end

-- A fresh key, not the one crypto caches, for "another key of the same type".
local others = {}
local function other_private(kind)
  if not others[kind] then
    others[kind] = kind == "RSA"
      and crypto.run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048")
      or crypto.run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:" .. kind)
  end
  return others[kind]
end

-- Stable 64-byte HMAC secrets, made once per run.
local secrets = {}
local function secret(name)
  secrets[name] = secrets[name] or crypto.random_bytes(64)
  return secrets[name]
end

after_each(function()
  for i = #temporary, 1, -1 do
    os.remove(temporary[i])
    temporary[i] = nil
  end
  collectgarbage()
end)

-- ---------------------------------------------------------------------------
-- 1. RFC 7515 Appendix A

-- The three JWT examples of RFC 7515 Appendix A share one JWS Payload
-- (A.1.1), written with CRLF line breaks and a leading space on the second
-- and third lines:
--   {"iss":"joe",
--    "exp":1300819380,
--    "http://example.com/is_root":true}
local RFC_PAYLOAD = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
local RFC_EXP = 1300819380
local RFC_CLAIMS = { iss = "joe", exp = RFC_EXP, ["http://example.com/is_root"] = true }
local RFC_BEFORE_EXP = RFC_EXP - 3600
local RFC_AFTER_EXP = RFC_EXP + 3600

-- The published RSA key of A.2.1 (a 2048-bit modulus), private members included.
local RFC_RSA_JWK = {
  kty = "RSA",
  n = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
  e = "AQAB",
  d = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
  p = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
  q = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
  dp = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
  dq = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
  qi = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U",
}

local RFC_EXAMPLES = {
  {
    section = "A.1", title = "HMAC SHA-256", alg = "HS256",
    -- {"typ":"JWT",\r\n "alg":"HS256"}
    header = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9",
    decoded_header = { typ = "JWT", alg = "HS256" },
    signature = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    -- The symmetric key of A.1.1 (64 bytes).
    jwk = { kty = "oct", k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow" },
  },
  {
    section = "A.2", title = "RSASSA-PKCS1-v1_5 SHA-256", alg = "RS256",
    header = "eyJhbGciOiJSUzI1NiJ9",  -- {"alg":"RS256"}
    decoded_header = { alg = "RS256" },
    signature = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw",
    jwk = RFC_RSA_JWK,
    public_jwk = { kty = "RSA", n = RFC_RSA_JWK.n, e = RFC_RSA_JWK.e },
  },
  {
    section = "A.3", title = "ECDSA P-256 SHA-256", alg = "ES256",
    header = "eyJhbGciOiJFUzI1NiJ9",  -- {"alg":"ES256"}
    decoded_header = { alg = "ES256" },
    -- R || S, 32 bytes each (A.3.1); ECDSA is randomised, so this is one
    -- valid signature among many.
    signature = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    -- The P-256 key of A.3.1, private member included.
    jwk = { kty = "EC", crv = "P-256",
            x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            d = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI" },
    public_jwk = { kty = "EC", crv = "P-256",
                   x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                   y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
  },
}

describe("RFC 7515 Appendix A examples", function()
  for _, ex in ipairs(RFC_EXAMPLES) do
    describe(ex.section .. " (" .. ex.title .. ")", function()
      local token = ex.header .. "." .. RFC_PAYLOAD .. "." .. ex.signature
      local opts = { algs = { ex.alg }, now = RFC_BEFORE_EXP }

      it("verifies with the published key before its exp", function()
        local keysets = { tp.keys(ex.jwk), tp.keys(tp.json_encode(ex.jwk)) }
        if ex.public_jwk then keysets[#keysets + 1] = tp.keys(ex.public_jwk) end
        for _, keyset in ipairs(keysets) do
          local claims, header = tp.verify(token, keyset, opts)
          assert.are.same(RFC_CLAIMS, claims)
          assert.are.equal("integer", math.type(claims.exp))
          assert.are.same(ex.decoded_header, header)
        end
      end)

      it("gives bad_signature when one character of the payload changes", function()
        -- "iss":"joe" becomes "iss":"joy": still valid JSON, still canonical
        -- base64url, so only the signature can tell.
        local payload = tp.b64url_decode(RFC_PAYLOAD)
        local changed = payload:gsub('"joe"', '"joy"')
        assert.are_not.equal(payload, changed)
        local forged = ex.header .. "." .. tp.b64url_encode(changed) .. "." .. ex.signature
        assert_fails("bad_signature", tp.verify(forged, tp.keys(ex.jwk), opts))
      end)

      it("is expired once now is past its exp", function()
        assert_fails("expired", tp.verify(token, tp.keys(ex.jwk), { algs = { ex.alg }, now = RFC_AFTER_EXP }))
      end)
    end)
  end

  it("A.1 is refused without an explicit HS256 allow-list (the default admits RS, PS and ES only)", function()
    local a1 = RFC_EXAMPLES[1]
    local token = a1.header .. "." .. RFC_PAYLOAD .. "." .. a1.signature
    assert_fails("alg_not_allowed", tp.verify(token, tp.keys(a1.jwk), { now = RFC_BEFORE_EXP }))
  end)
end)

-- ---------------------------------------------------------------------------
-- 2. Other implementations

-- The asymmetric algorithms with the key each uses and how to make a raw
-- signature with the openssl CLI (JWA, RFC 7518 sections 3.3 to 3.5).
local function rsa_key() return crypto.rsa_private(2048) end
local ASYMMETRIC = {
  { alg = "RS256", key = rsa_key, digest = "sha256" },
  { alg = "RS384", key = rsa_key, digest = "sha384" },
  { alg = "RS512", key = rsa_key, digest = "sha512" },
  { alg = "PS256", key = rsa_key, digest = "sha256", pss = true },
  { alg = "PS384", key = rsa_key, digest = "sha384", pss = true },
  { alg = "PS512", key = rsa_key, digest = "sha512", pss = true },
  { alg = "ES256", key = function() return crypto.ec_private("P-256") end, digest = "sha256", width = 32 },
  { alg = "ES384", key = function() return crypto.ec_private("P-384") end, digest = "sha384", width = 48 },
  { alg = "ES512", key = function() return crypto.ec_private("P-521") end, digest = "sha512", width = 66 },
}
local ASYMMETRIC_BY_ALG = {}
for _, case in ipairs(ASYMMETRIC) do ASYMMETRIC_BY_ALG[case.alg] = case end

describe("tokens built with the openssl CLI", function()
  -- The header and payload are written by hand, with the spacing and member
  -- order another implementation might choose; tokenpolicy must verify the
  -- bytes as they are and never re-serialise them.
  local function build(case)
    local header = ('{"alg":"%s","typ":"JWT"}'):format(case.alg)
    local payload = ('{"sub": "alice", "iss": "https://openssl.example", "exp": %d, "iat": %d}')
      :format(NOW + 3600, NOW)
    local input = tp.b64url_encode(header) .. "." .. tp.b64url_encode(payload)
    local der_or_raw = crypto.openssl_sign(case.key(), input, case.digest, case.pss)
    -- `openssl dgst` writes ECDSA signatures in DER; JWS wants R || S, each
    -- left-padded to the curve's byte length (RFC 7518 section 3.4).
    local signature = case.width and crypto.der_to_jose(der_or_raw, case.width) or der_or_raw
    return input .. "." .. tp.b64url_encode(signature), der_or_raw
  end

  local tokens = {}
  local function token_for(case)
    tokens[case.alg] = tokens[case.alg] or build(case)
    return tokens[case.alg]
  end

  local KEY_FORMS = {
    { "an SPKI public key PEM", function(pem) return tp.keys(crypto.public_of(pem)) end },
    { "an X.509 certificate", function(pem) return tp.keys(crypto.certificate_of(pem)) end },
    { "a JWK", function(pem) return tp.keys(jwk_of(crypto.public_of(pem))) end },
  }

  -- RS256..RS512, PS256 and ES256..ES512: what `openssl dgst -sign` makes directly.
  for _, case in ipairs(ASYMMETRIC) do
    if not case.alg:match("^PS") or case.alg == "PS256" then
      for _, form in ipairs(KEY_FORMS) do
        it(case.alg .. " verifies with a key set from " .. form[1], function()
          local keyset = assert(form[2](case.key()))
          local claims, header = tp.verify(token_for(case), keyset, { algs = { case.alg }, now = NOW })
          assert.are.same({ sub = "alice", iss = "https://openssl.example", exp = NOW + 3600, iat = NOW }, claims)
          assert.are.same({ alg = case.alg, typ = "JWT" }, header)
        end)
      end
    end
  end

  it("a PS256 signature whose salt is not 32 bytes gives bad_signature (RFC 7518 section 3.5)", function()
    -- JWA fixes the PSS salt at the hash length; `openssl dgst` uses the
    -- longest salt that fits unless told `rsa_pss_saltlen:digest`.
    local pem = rsa_key()
    local input = token_for(ASYMMETRIC_BY_ALG.PS256):match("^[^.]+%.[^.]+")
    local key, data, out = tmpfile(pem), tmpfile(input), tmpfile("")
    crypto.run(("openssl dgst -sha256 -sign %s -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:max"
      .. " -out %s %s && echo ok"):format(key, out, data))
    local f = assert(io.open(out, "rb"))
    local signature = f:read("a")
    f:close()
    local token = input .. "." .. tp.b64url_encode(signature)
    assert_fails("bad_signature", tp.verify(token, tp.keys(crypto.public_of(pem)), { now = NOW }))
  end)

  it("an ECDSA signature left in DER form gives bad_signature", function()
    local case = ASYMMETRIC_BY_ALG.ES256
    local _, der = build(case)
    local input = token_for(case):match("^[^.]+%.[^.]+")
    local token = input .. "." .. tp.b64url_encode(der)
    assert_fails("bad_signature", tp.verify(token, tp.keys(crypto.public_of(case.key())), { now = NOW }))
  end)
end)

describe("tokens signed by Node's crypto module", function()
  -- Node writes its own header ({"alg":...,"typ":"JWT","kid":"node-1"}) and
  -- base64url; the payload below is used byte for byte.
  local PAYLOAD = ('{"iss":"https://node.example","sub":"bob","name":"Zoë 東京","exp":%d,"iat":%d,"ratio":1.5}')
    :format(NOW + 3600, NOW)
  local EXPECTED = { iss = "https://node.example", sub = "bob", name = "Zoë 東京",
                     exp = NOW + 3600, iat = NOW, ratio = 1.5 }

  local function node_sign(alg, key_path)
    local out, ok = node("sign", alg, key_path, PAYLOAD, "node-1")
    assert(ok, "node failed: " .. out)
    return out
  end

  local function check(token, keyset, alg)
    local claims, header = tp.verify(token, keyset, { algs = { alg }, now = NOW })
    assert.are.same(EXPECTED, claims)
    assert_same_number_types(EXPECTED, claims)
    assert.are.same({ alg = alg, typ = "JWT", kid = "node-1" }, header)
  end

  for _, case in ipairs(ASYMMETRIC) do
    it(case.alg .. " verifies with the SPKI public key", function()
      local token = node_sign(case.alg, tmpfile(case.key()))
      check(token, tp.keys(crypto.public_of(case.key())), case.alg)
    end)
  end

  for _, alg in ipairs { "HS256", "HS384", "HS512" } do
    it(alg .. " (createHmac) verifies with the secret as an oct JWK", function()
      local key = secret("node")
      local token = node_sign(alg, tmpfile(key))
      check(token, tp.keys(crypto.hmac_jwk(key, "node-1")), alg)
    end)
  end
end)

describe("tokens signed by tp.sign, verified by Node's crypto module", function()
  local CLAIMS = { iss = "https://tokenpolicy.example", sub = "carol", aud = "api",
                   exp = NOW + 3600, iat = NOW, name = "Ångström" }

  -- Every algorithm, not only the common RS256, PS256, ES256 and HS256:
  -- P-384 and P-521 (66-byte coordinates) are where R || S padding
  -- mistakes would show.
  local CASES = {}
  for _, case in ipairs(ASYMMETRIC) do
    CASES[#CASES + 1] = { alg = case.alg, private = case.key }
  end
  for _, alg in ipairs { "HS256", "HS384", "HS512" } do
    CASES[#CASES + 1] = { alg = alg }
  end

  -- The key set tp signs with, and the key file Node verifies with.
  local function keys_for(case)
    if case.alg:match("^HS") then
      return tp.keys(crypto.hmac_jwk(secret("reverse"), "tp-1")), tmpfile(secret("reverse"))
    end
    return tp.keys(case.private()), tmpfile(crypto.public_of(case.private()))
  end

  for _, case in ipairs(CASES) do
    it(case.alg .. " verifies in Node", function()
      local signer, node_key = keys_for(case)
      local token = assert(tp.sign(CLAIMS, signer, { alg = case.alg, kid = "tp-1" }))
      local payload, ok = node("verify", case.alg, node_key, token)
      assert(ok, "Node refused the token: " .. payload)
      assert.are.same(CLAIMS, tp.json_decode(payload))
    end)
  end

  it("Node refuses a tp.sign token whose payload was changed (the check is real)", function()
    local signer, node_key = keys_for({ alg = "ES256", private = ASYMMETRIC_BY_ALG.ES256.key })
    local token = assert(tp.sign(CLAIMS, signer, { alg = "ES256" }))
    local h, _, s = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    local forged = h .. "." .. tp.b64url_encode(tp.json_encode { sub = "mallory", exp = NOW + 3600 }) .. "." .. s
    local _, ok = node("verify", "ES256", node_key, forged)
    assert.is_false(ok)
  end)
end)

-- ---------------------------------------------------------------------------
-- 3. Round trips

-- Claims that exercise every JSON type: nested tables, integers (which must
-- stay Lua integers, even past 2^53), floats (which must stay floats, even
-- when whole), booleans, tokenpolicy.null and non-ASCII text.
local function sample_claims()
  return {
    iss = "https://issuer.example", sub = "alice", aud = { "api", "web" },
    iat = NOW, nbf = NOW, exp = NOW + 3600, jti = "b3f0c2a4-5d61-4e5f-9a1b-0c7d8e9f1a2b",
    admin = true, suspended = false, manager = tp.null,
    count = 0, negative = -42, big = 9007199254740993,
    ratio = 0.1, pi = 3.141592653589793, whole = 2.0, tiny = 1e-300,
    name = "Zoë Ångström — 東京 🚀",
    profile = {
      emails = { "alice@example.org", "a@example.net" },
      quota = { used = 1.5, max = 100, unlimited = false },
      matrix = { { 1, 2 }, { 3.5, true, tp.null } },
      settings = {},
    },
  }
end

-- Every algorithm with its signing key set, the key set made from the
-- public part, and another key of the same type.  HMAC keys carry their kid
-- in the JWK; the others get it from sign's `kid` option.
local ROUND_TRIPS = {}
for _, alg in ipairs { "HS256", "HS384", "HS512" } do
  ROUND_TRIPS[#ROUND_TRIPS + 1] = {
    alg = alg, kid = "hmac-1",
    private = function() return tp.keys(crypto.hmac_jwk(secret("round trip"), "hmac-1")) end,
    -- A shared secret has no public half: the verifier holds the same JWK,
    -- here given as a Lua table.
    public = function() return tp.keys(tp.json_decode(crypto.hmac_jwk(secret("round trip"), "hmac-1"))) end,
    other = function() return tp.keys(crypto.hmac_jwk(secret("other"), "hmac-1")) end,
  }
end
for _, case in ipairs(ASYMMETRIC) do
  local kind = case.width and ({ [32] = "P-256", [48] = "P-384", [66] = "P-521" })[case.width] or "RSA"
  ROUND_TRIPS[#ROUND_TRIPS + 1] = {
    alg = case.alg, kid = kind:lower() .. "-1",
    private = function() return tp.keys(case.key()) end,
    public = function() return tp.keys(crypto.public_of(case.key())) end,
    other = function() return tp.keys(crypto.public_of(other_private(kind))) end,
  }
end

describe("round trips through tp.sign and tp.verify", function()
  for _, case in ipairs(ROUND_TRIPS) do
    describe(case.alg, function()
      local opts = { algs = { case.alg }, now = NOW }
      local function sign(claims)
        local sign_opts = { alg = case.alg }
        if not case.alg:match("^HS") then sign_opts.kid = case.kid end
        return assert(tp.sign(claims, case.private(), sign_opts))
      end

      it("returns the claims it signed, with their types", function()
        local claims = tp.verify(sign(sample_claims()), case.public(), opts)
        assert.are.same(sample_claims(), claims)
        assert_same_number_types(sample_claims(), claims)
        assert.are.equal(tp.null, claims.manager)
        assert.are.equal(tp.null, claims.profile.matrix[2][3])
      end)

      it("writes alg, typ JWT and the kid into the header", function()
        local claims, header = tp.verify(sign(sample_claims()), case.public(), opts)
        assert.is_table(claims)
        assert.are.same({ alg = case.alg, typ = "JWT", kid = case.kid }, header)
        assert.are.same(header, tp.decode(sign({ exp = NOW + 60 })).header)
      end)

      it("verifies with the key set made from the private key and with the public one", function()
        local token = sign(sample_claims())
        local private = case.private()
        assert.are.same(sample_claims(), (tp.verify(token, private, opts)))
        assert.are.same(sample_claims(), (tp.verify(token, case.public(), opts)))
      end)

      it("gives bad_signature with another key of the same type", function()
        assert_fails("bad_signature", tp.verify(sign(sample_claims()), case.other(), opts))
      end)
    end)
  end
end)
