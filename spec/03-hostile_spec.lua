-- Hostile input: what decode, keys and verify answer when the token or the
-- key material is malformed, forged, oversized or built to confuse.
--
-- Every refusal is the fail triple `nil, "code: message", "code"` with the
-- exact code below, and the message never repeats the token: neither the
-- whole of it nor any 16 characters of its payload or signature part (nor,
-- for keys, any 16 characters of the key material).  No refusal may leave
-- an error on the thread's OpenSSL error queue.  Misuse by the caller (wrong
-- argument types, unknown options) raises instead, naming the argument.
--
-- The cases are tables: { "what the input is", "expected code", make },
-- where make() builds the input at test time (key material comes from the
-- openssl CLI through helpers.crypto, nothing secret is committed).  Hostile
-- JSON is written as text and base64url-encoded by hand, so that it can hold
-- what no encoder would produce: duplicate names, invalid UTF-8, NUL escapes,
-- deep nesting.  Where a case is about the payload or a claim, the token
-- carries a genuine signature, so the refusal cannot come from the signature.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"

local b64 = tp.b64url_encode
local NOW = 1700000000
local ISS = "https://idp.example"
local MiB = 1024 * 1024

-- ---- key material, made on first use ------------------------------------

local function hex_bytes(hex)
  return (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

-- The public JWK (as a Lua table) of an RSA private PEM, read with openssl.
local function rsa_jwk(private_pem, extra)
  local path = crypto.tmpfile(crypto.public_of(private_pem))
  local modulus = crypto.run("openssl rsa -pubin -noout -modulus -in " .. path):match("Modulus=(%x+)")
  os.remove(path)
  local jwk = { kty = "RSA", n = b64(hex_bytes(modulus:gsub("^00", ""))), e = "AQAB" }
  for k, v in pairs(extra or {}) do jwk[k] = v end
  return jwk
end

-- The public point (x, y as raw bytes) of an EC private PEM.
local function ec_point(private_pem)
  local path = crypto.tmpfile(crypto.public_of(private_pem))
  local text = crypto.run("openssl pkey -pubin -noout -text -in " .. path)
  os.remove(path)
  local bytes = hex_bytes((text:match("pub:(.-)ASN1"):gsub("[^%x]", "")))
  assert(bytes:byte(1) == 4, "expected an uncompressed point")
  local width = (#bytes - 1) // 2
  return bytes:sub(2, 1 + width), bytes:sub(2 + width)
end

local function ec_jwk(private_pem, extra)
  local x, y = ec_point(private_pem)
  local jwk = { kty = "EC", crv = "P-256", x = b64(x), y = b64(y) }
  for k, v in pairs(extra or {}) do jwk[k] = v end
  return jwk
end

local makers = {
  rsa = function() return crypto.rsa_private(2048) end,
  rsa_public = function(fx) return crypto.public_of(fx.rsa) end,
  rsa_signer = function(fx) return assert(tp.keys(fx.rsa)) end,
  rsa_set = function(fx) return assert(tp.keys(fx.rsa_public)) end,
  rsa_kid_set = function(fx) return assert(tp.keys(fx.rsa_public, { kid = "rsa-1" })) end,
  attacker_rsa = function()
    return crypto.run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048")
  end,
  attacker_signer = function(fx) return assert(tp.keys(fx.attacker_rsa)) end,
  ec = function() return crypto.ec_private("P-256") end,
  ec_signer = function(fx) return assert(tp.keys(fx.ec)) end,
  ec_set = function(fx) return assert(tp.keys(crypto.public_of(fx.ec))) end,
  ec384_signer = function() return assert(tp.keys(crypto.ec_private("P-384"))) end,
  hmac_secret = function() return crypto.random_bytes(32) end,
  hs_set = function(fx) return assert(tp.keys(crypto.hmac_jwk(fx.hmac_secret))) end,
  hs512_signer = function() return assert(tp.keys(crypto.hmac_jwk(crypto.random_bytes(64)))) end,
  empty_set = function() return assert(tp.keys('{"keys":[]}')) end,
}
local fx = setmetatable({}, {
  __index = function(t, name)
    local value = assert(makers[name], "no fixture " .. name)(t)
    rawset(t, name, value)
    return value
  end,
})

-- ---- tokens ---------------------------------------------------------------

local HEADER = '{"alg":"RS256","typ":"JWT"}'

-- The claims of a token that verifies at NOW, as JSON text; `more` is JSON
-- text appended inside the object (it may repeat a name on purpose).
local function body(more)
  return ('{"sub":"alice","iss":"%s","aud":"api","iat":%d,"exp":%d%s}')
    :format(ISS, NOW - 10, NOW + 3600, more and ("," .. more) or "")
end

-- Three parts from raw texts; the signature is raw bytes (default none).
local function compact(header_text, payload_text, signature)
  return b64(header_text) .. "." .. b64(payload_text) .. "." .. b64(signature or "")
end

-- An RS256 token over exactly these JSON texts, signed by openssl.
local function rs256(header_text, payload_text, pem)
  local input = b64(header_text) .. "." .. b64(payload_text)
  return input .. "." .. b64(crypto.openssl_sign(pem or fx.rsa, input, "sha256"))
end

-- A well-formed token from Lua claims: GOOD claims overridden by `changes`
-- (false removes a claim), signed by tp.sign.
local function signed(changes, signer, opts)
  local claims = { sub = "alice", iss = ISS, aud = "api", iat = NOW - 10, exp = NOW + 3600 }
  for k, v in pairs(changes or {}) do
    if v == false then claims[k] = nil else claims[k] = v end
  end
  return assert(tp.sign(claims, signer or fx.rsa_signer, opts or { alg = "RS256" }))
end

-- The token with its signature bytes replaced by change(signature bytes).
local function resigned(token, change)
  local head, signature = token:match("^(.*)%.([^.]*)$")
  return head .. "." .. b64(change(assert(tp.b64url_decode(signature))))
end

-- Nested JSON arrays, `levels` deep, around `inner`.
local function nest(levels, inner)
  return ("["):rep(levels) .. (inner or "") .. ("]"):rep(levels)
end

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

-- Sets the lowest unused bit of the last character of unpadded base64url
-- text: a lax decoder reads the same bytes, a canonical one refuses.
local function set_unused_bit(text)
  assert(#text % 4 == 2 or #text % 4 == 3, "this length has no unused bits")
  local value = ALPHABET:find(text:sub(-1), 1, true) - 1
  value = value | 1
  return text:sub(1, -2) .. ALPHABET:sub(value + 1, value + 1)
end

-- ---- the checks every case makes --------------------------------------------

-- Fails when message repeats 16 consecutive characters of any of texts.
local function assert_no_leak(message, texts)
  for _, text in ipairs(texts) do
    for i = 1, #message - 15 do
      local window = message:sub(i, i + 15)
      assert(not text:find(window, 1, true),
        ("the message repeats 16 characters of the input: %q"):format(message))
    end
  end
end

-- The parts of a token after the header (payload, signature, and any more)
-- that are long enough to hold 16 characters, each once.
local function secret_parts(token)
  local parts, seen, index = {}, {}, 0
  for part in (token .. "."):gmatch("([^.]*)%.") do
    index = index + 1
    if index > 1 and #part >= 16 and not seen[part] then
      seen[part] = true
      parts[#parts + 1] = part
    end
  end
  return parts
end

local function expect_fail(code, leak_texts, whole, value, message, got_code)
  assert.is_nil(value, ("expected the fail triple with %s, got a %s"):format(code, type(value)))
  assert.are.equal(code, got_code, message)
  assert.is_string(message)
  assert.are.equal(code .. ": ", message:sub(1, #code + 2), message)
  if whole and #whole > 0 then
    assert(not message:find(whole, 1, true), "the message holds the whole input")
  end
  assert_no_leak(message, leak_texts)
  assert.is_false(tp._openssl_error_pending(), "an OpenSSL error was left on the queue")
  return message
end

local function with_now(opts)
  local merged = { now = NOW }
  for k, v in pairs(opts or {}) do merged[k] = v end
  return merged
end

local count = 0

-- describe(topic) with one `it` per case.  make() returns what is fed in.
local function decode_cases(topic, list)
  describe(topic, function()
    for _, case in ipairs(list) do
      local name, code, make = case[1], case[2], case[3]
      count = count + 1
      it(name .. " (" .. code .. ")", function()
        local token, opts = make()
        expect_fail(code, secret_parts(token), token, tp.decode(token, opts))
      end)
    end
  end)
end

local function verify_cases(topic, list)
  describe(topic, function()
    for _, case in ipairs(list) do
      local name, code, make = case[1], case[2], case[3]
      count = count + 1
      it(name .. " (" .. code .. ")", function()
        local token, keyset, opts = make()
        expect_fail(code, secret_parts(token), token, tp.verify(token, keyset or fx.rsa_set, with_now(opts)))
      end)
    end
  end)
end

local function keys_cases(topic, list)
  describe(topic, function()
    for _, case in ipairs(list) do
      local name, code, make = case[1], case[2], case[3]
      count = count + 1
      it(name .. " (" .. code .. ")", function()
        local material = make()
        local texts = { type(material) == "string" and material or tp.json_encode(material) }
        expect_fail(code, texts, nil, tp.keys(material))
      end)
    end
  end)
end

after_each(function() collectgarbage() end)

-- The table-driven cases below are meant to stay many: at least 60.
teardown(function()
  assert(count >= 60, "only " .. count .. " hostile cases")
end)

-- ==== decode =================================================================

describe("tp.decode refuses", function()
  decode_cases("tokens that are not three dot-separated parts", {
    { "the empty string", "malformed", function() return "" end },
    { "a single part with no dots", "malformed", function()
      return b64(HEADER) end },
    { "two parts", "malformed", function()
      return b64(HEADER) .. "." .. b64(body()) end },
    { "four parts", "malformed", function()
      return compact(HEADER, body(), "sig") .. "." .. b64("more") end },
    { "five parts: an encrypted token (JWE)", "malformed", function()
      return b64('{"alg":"RSA-OAEP","enc":"A256GCM"}') .. "." .. b64(crypto.random_bytes(256)) .. "." ..
        b64(crypto.random_bytes(12)) .. "." .. b64(crypto.random_bytes(64)) .. "." .. b64(crypto.random_bytes(16))
    end },
    { "nothing but two dots", "malformed", function() return ".." end },
    { "an empty header", "malformed", function()
      return "." .. b64(body()) .. "." .. b64("signature") end },
    { "an empty payload", "malformed", function()
      return b64(HEADER) .. ".." .. b64("signature") end },
  })

  decode_cases("parts that are not canonical unpadded base64url", {
    { "a header with '=' padding", "malformed", function()
      local h = b64('{"alg":"RS256"}  ')  -- 17 bytes: needs padding in base64
      return h .. ("="):rep((4 - #h % 4) % 4) .. "." .. b64(body()) .. "."
    end },
    { "a signature with '=' padding", "malformed", function()
      return compact(HEADER, body(), "sig!") .. "=="
    end },
    { "the standard alphabet ('+' and '/') instead of the URL-safe one", "malformed", function()
      local p = b64(body('"note":"???>>>"'))
      assert(p:find("[-_]"))
      return b64(HEADER) .. "." .. p:gsub("-", "+"):gsub("_", "/") .. "."
    end },
    { "a line break inside the payload", "malformed", function()
      local p = b64(body())
      return b64(HEADER) .. "." .. p:sub(1, 20) .. "\r\n" .. p:sub(21) .. "."
    end },
    { "a space inside the token (surrounding whitespace is stripped, inner is not)", "malformed", function()
      local t = compact(HEADER, body())
      return t:sub(1, 10) .. " " .. t:sub(11)
    end },
    { "a Bearer prefix without the space after it", "malformed", function()
      return "Bearer" .. compact(HEADER, body())
    end },
    { "a NUL byte inside the token", "malformed", function()
      local p = b64(body())
      return b64(HEADER) .. "." .. p:sub(1, 8) .. "\0" .. p:sub(9) .. "."
    end },
    { "raw non-UTF-8 bytes inside the token", "malformed", function()
      return b64(HEADER) .. "." .. b64(body()) .. "\xff\xfe.\xc3\x28"
    end },
    { "a part whose length is 1 mod 4 (no bytes encode to that)", "malformed", function()
      local h = b64(HEADER)
      return h .. "A" .. ("A"):rep((1 - (#h + 1) % 4) % 4) .. "." .. b64(body()) .. "."
    end },
    { "a header with non-zero unused trailing bits", "malformed", function()
      local header = '{"alg":"RS256","kid":"k"}'
      return set_unused_bit(b64(header)) .. "." .. b64(body()) .. "."
    end },
    { "a genuine token whose signature has non-zero unused trailing bits", "malformed", function()
      local h, p, s = signed():match("^(.-)%.(.-)%.(.*)$")
      return h .. "." .. p .. "." .. set_unused_bit(s)
    end },
  })

  decode_cases("header or payload that is not a JSON object", {
    { "a header that is not JSON at all", "malformed", function()
      return compact("hello, world", body()) end },
    { "a header that is a JSON array", "malformed", function()
      return compact('["RS256"]', body()) end },
    { "a header that is a JSON string", "malformed", function()
      return compact('"RS256"', body()) end },
    { "a payload that is a JSON number", "malformed", function()
      return compact(HEADER, "42") end },
    { "a payload that is JSON null", "malformed", function()
      return compact(HEADER, "null") end },
    { "a payload cut off in the middle", "malformed", function()
      return compact(HEADER, body():sub(1, -10)) end },
    { "a payload with garbage after the object", "malformed", function()
      return compact(HEADER, body() .. ' {"sub":"admin"}') end },
    { "a payload starting with a byte order mark", "malformed", function()
      return compact(HEADER, "\xef\xbb\xbf" .. body()) end },
  })

  decode_cases("JSON that two readers could read differently", {
    { "a payload naming a claim twice", "malformed", function()
      return compact(HEADER, body('"sub":"admin"')) end },
    { "a header naming alg twice", "malformed", function()
      return compact('{"alg":"RS256","alg":"none"}', body()) end },
    { "a \\u0000 escape inside a claim", "malformed", function()
      return compact(HEADER, body('"role":"user\\u0000admin"')) end },
    { "a \\u0000 escape inside a claim name", "malformed", function()
      return compact(HEADER, body('"role\\u0000":"admin"')) end },
    { "a raw NUL byte inside a JSON string", "malformed", function()
      return compact(HEADER, body('"role":"user\0admin"')) end },
    { "invalid UTF-8 inside a claim", "malformed", function()
      return compact(HEADER, body('"name":"\xff\xfe"')) end },
    { "an overlong UTF-8 encoding of '/'", "malformed", function()
      return compact(HEADER, body('"path":"..\xc0\xaf.."')) end },
    { "a UTF-8 encoded surrogate", "malformed", function()
      return compact(HEADER, body('"name":"\xed\xa0\x80"')) end },
    { "an escaped lone surrogate", "malformed", function()
      return compact(HEADER, body('"name":"\\ud800"')) end },
    -- Numbers beyond what the reader holds (RFC 8259 section 6 allows the limit).
    { "an integer beyond 64 bits (2^63)", "malformed", function()
      return compact(HEADER, body('"n":9223372036854775808')) end },
    { "a number beyond the double range (1e400)", "malformed", function()
      return compact(HEADER, body('"n":1e400')) end },
  })

  decode_cases("nesting too deep", {
    { "a payload nested 10,000 levels deep", "malformed", function()
      return compact(HEADER, body('"deep":' .. nest(10000))), { max_size = MiB } end },
    { "a header nested 10,000 levels deep", "malformed", function()
      return compact('{"alg":"RS256","x":' .. nest(10000) .. '}', body()), { max_size = MiB } end },
    { "a payload nested 65 levels deep", "malformed", function()
      return compact(HEADER, body('"deep":' .. nest(64))) end },
    { "a header nested 65 levels deep", "malformed", function()
      return compact('{"alg":"RS256","x":' .. nest(64) .. '}', body()) end },
    { "a payload nested 2,000 levels deep (under the JSON parser's own limit)", "malformed", function()
      return compact(HEADER, body('"deep":' .. nest(2000))) end },
  })

  decode_cases("tokens over the size limit, before looking at them", {
    { "a token of 1 MiB", "too_large", function()
      return compact(HEADER, body('"pad":"' .. ("A"):rep(MiB) .. '"')) end },
    { "1 MiB of dots", "too_large", function() return ("."):rep(MiB) end },
    { "16385 bytes under the default limit of 16384", "too_large", function()
      return ("A"):rep(16385) end },
    { "one byte over the caller's max_size", "too_large", function()
      local token = signed()
      return token, { max_size = #token - 1 }
    end },
  })
end)

describe("tp.decode accepts", function()
  it("an empty signature (decode does not verify)", function()
    local jwt = assert(tp.decode(compact(HEADER, body())))
    assert.are.equal("", jwt.signature)
  end)

  it("a token of exactly max_size bytes", function()
    local token = signed()
    assert.is_table(tp.decode(token, { max_size = #token }))
  end)

  it("a payload nested 64 levels deep, holding a value", function()
    -- The payload object is level 1, the 63 arrays levels 2 to 64.
    local jwt = assert(tp.decode(compact(HEADER, body('"deep":' .. nest(63, "0")))))
    local v = jwt.claims.deep
    for _ = 1, 62 do v = v[1] end
    assert.are.same({ 0 }, v)
  end)
end)

-- ==== verify =================================================================

describe("tp.verify refuses", function()
  verify_cases("tokens malformed as decode refuses them", {
    { "the empty string", "malformed", function() return "" end },
    { "five parts: an encrypted token (JWE)", "malformed", function()
      return signed() .. "." .. b64("iv") .. "." .. b64("tag") end },
    { "a token of 1 MiB", "too_large", function()
      return compact(HEADER, body('"pad":"' .. ("A"):rep(MiB) .. '"')) end },
    { "a genuine token over the caller's max_size", "too_large", function()
      local token = signed()
      return token, nil, { max_size = #token - 1 }
    end },
    { "a genuine token whose signature has non-zero unused trailing bits", "malformed", function()
      local h, p, s = signed():match("^(.-)%.(.-)%.(.*)$")
      return h .. "." .. p .. "." .. set_unused_bit(s)
    end },
    { "a header that is not a JSON object", "malformed", function()
      return compact('["RS256"]', body(), "signature") end },
    { "a header nested 10,000 levels deep", "malformed", function()
      return compact('{"alg":"RS256","x":' .. nest(10000) .. '}', body()), nil, { max_size = MiB } end },
    { "a signed header nested 65 levels deep", "malformed", function()
      return rs256('{"alg":"RS256","x":' .. nest(64) .. '}', body()) end },
    { "a signed payload that is not a JSON object", "malformed", function()
      return rs256(HEADER, '["alice"]') end },
    { "a signed payload naming a claim twice", "malformed", function()
      return rs256(HEADER, body('"sub":"admin"')) end },
    { "a signed payload with \\u0000 in a claim", "malformed", function()
      return rs256(HEADER, body('"role":"user\\u0000admin"')) end },
    { "a signed payload with invalid UTF-8 in a claim", "malformed", function()
      return rs256(HEADER, body('"name":"\xc3\x28"')) end },
    { "a signed payload nested 10,000 levels deep", "malformed", function()
      return rs256(HEADER, body('"deep":' .. nest(10000))), nil, { max_size = MiB } end },
    { "a signed payload nested 65 levels deep", "malformed", function()
      return rs256(HEADER, body('"deep":' .. nest(64))) end },
    { "a signed payload nested 2,000 levels deep", "malformed", function()
      return rs256(HEADER, body('"deep":' .. nest(2000))) end },
  })

  verify_cases("headers whose alg or kid is not a string", {
    { "a header without alg", "malformed", function()
      return rs256('{"typ":"JWT"}', body()) end },
    { "alg a number", "malformed", function()
      return rs256('{"alg":256}', body()) end },
    { "alg null", "malformed", function()
      return rs256('{"alg":null}', body()) end },
    { "alg a list", "malformed", function()
      return rs256('{"alg":["RS256"]}', body()) end },
    { "alg none followed by a \\u0000 escape", "malformed", function()
      return compact('{"alg":"none\\u0000RS256"}', body()) end },
    { "kid a number", "malformed", function()
      return rs256('{"alg":"RS256","kid":1}', body()), fx.rsa_kid_set end },
    { "kid null", "malformed", function()
      return rs256('{"alg":"RS256","kid":null}', body()), fx.rsa_kid_set end },
    { "kid an object", "malformed", function()
      return rs256('{"alg":"RS256","kid":{"$ref":"rsa-1"}}', body()), fx.rsa_kid_set end },
  })

  verify_cases("alg none, in any spelling", {
    { "alg none with no signature", "alg_not_allowed", function()
      return compact('{"alg":"none"}', body()) end },
    { "alg None", "alg_not_allowed", function()
      return compact('{"alg":"None"}', body()) end },
    { "alg NONE", "alg_not_allowed", function()
      return compact('{"alg":"NONE"}', body()) end },
    { "alg nOnE", "alg_not_allowed", function()
      return compact('{"alg":"nOnE"}', body()) end },
    { "alg 'none ' with a trailing space", "alg_not_allowed", function()
      return compact('{"alg":"none "}', body()) end },
    { "alg none with a signature attached", "alg_not_allowed", function()
      return compact('{"alg":"none"}', body(), crypto.random_bytes(256)) end },
    { "alg none even when the caller allows every algorithm", "alg_not_allowed", function()
      return compact('{"alg":"none"}', body()), nil,
        { algs = { "HS256", "RS256", "PS256", "ES256", "ES384", "ES512" } }
    end },
  })

  verify_cases("algorithms that are unknown, not allowed, or do not fit the key", {
    { "alg rs256 (names are case-sensitive)", "alg_not_allowed", function()
      return rs256('{"alg":"rs256"}', body()) end },
    { "alg an empty string", "alg_not_allowed", function()
      return rs256('{"alg":""}', body()) end },
    { "alg RS1 (not a supported algorithm)", "alg_not_allowed", function()
      return rs256('{"alg":"RS1"}', body()) end },
    { "HS256 signed with the RSA public key's PEM as the HMAC secret, default algs", "alg_not_allowed",
      function()
        local confused = assert(tp.keys(crypto.hmac_jwk(fx.rsa_public)))
        return signed(nil, confused, { alg = "HS256" }), fx.rsa_set
      end },
    { "HS256 signed with the RSA public key's PEM as the HMAC secret, algs HS256 and RS256",
      "alg_not_allowed", function()
        local confused = assert(tp.keys(crypto.hmac_jwk(fx.rsa_public)))
        return signed(nil, confused, { alg = "HS256" }), fx.rsa_set, { algs = { "HS256", "RS256" } }
      end },
    { "HS256 with the PEM as secret and the kid of the RSA key", "alg_not_allowed", function()
      local confused = assert(tp.keys(crypto.hmac_jwk(fx.rsa_public)))
      return signed(nil, confused, { alg = "HS256", kid = "rsa-1" }), fx.rsa_kid_set,
        { algs = { "HS256", "RS256" } }
    end },
    { "an RS256 token when only ES256 is allowed", "alg_not_allowed", function()
      return signed(), fx.rsa_set, { algs = { "ES256" } } end },
    { "an ES256 token verified against an RSA key set", "alg_not_allowed", function()
      return signed(nil, fx.ec_signer, { alg = "ES256" }), fx.rsa_set end },
    { "an ES384 token verified against a P-256 key set", "alg_not_allowed", function()
      return signed(nil, fx.ec384_signer, { alg = "ES384" }), fx.ec_set end },
    { "an HS512 token against a 256-bit HMAC secret", "alg_not_allowed", function()
      return signed(nil, fx.hs512_signer, { alg = "HS512" }), fx.hs_set, { algs = { "HS512" } } end },
    { "an RS256 token against an HMAC key set", "alg_not_allowed", function()
      return signed(), fx.hs_set, { algs = { "HS256", "RS256" } } end },
  })

  verify_cases("tokens for which no key is known", {
    { "a kid that no key has", "unknown_key", function()
      return signed(nil, nil, { alg = "RS256", kid = "rsa-2" }), fx.rsa_kid_set end },
    { "a kid that tries path traversal", "unknown_key", function()
      return signed(nil, nil, { alg = "RS256", kid = "../../../../etc/passwd" }), fx.rsa_kid_set end },
    { "a kid of 8 KiB", "unknown_key", function()
      return signed(nil, nil, { alg = "RS256", kid = ("k"):rep(8192) }), fx.rsa_kid_set end },
    { "a kid holding terminal escapes", "unknown_key", function()
      return signed(nil, nil, { alg = "RS256", kid = "\27[2J\27]0;owned\7" }), fx.rsa_kid_set end },
    { "any token against an empty key set", "unknown_key", function()
      return signed(), fx.empty_set end },
  })

  verify_cases("critical header extensions", {
    { "crit naming exp", "unsupported_crit", function()
      return signed(nil, nil, { alg = "RS256", header = { crit = { "exp" } } }) end },
    { "crit b64 with b64 false (unencoded payload)", "unsupported_crit", function()
      return rs256('{"alg":"RS256","b64":false,"crit":["b64"]}', body()) end },
    { "crit an empty array", "malformed", function()
      return rs256('{"alg":"RS256","crit":[]}', body()) end },
    { "crit a string", "malformed", function()
      return rs256('{"alg":"RS256","crit":"exp"}', body()) end },
  })

  verify_cases("signatures that are wrong or of the wrong length", {
    { "an RS256 token with an empty signature", "bad_signature", function()
      return resigned(signed(), function() return "" end) end },
    { "an RS256 signature short by one byte", "bad_signature", function()
      return resigned(signed(), function(s) return s:sub(1, -2) end) end },
    { "an RS256 signature cut to half", "bad_signature", function()
      return resigned(signed(), function(s) return s:sub(1, #s // 2) end) end },
    { "an RS256 signature with one byte more", "bad_signature", function()
      return resigned(signed(), function(s) return s .. "\0" end) end },
    { "an RS256 signature of zero bytes at full length", "bad_signature", function()
      return resigned(signed(), function(s) return ("\0"):rep(#s) end) end },
    { "an RS256 signature above the modulus", "bad_signature", function()
      return resigned(signed(), function(s) return ("\255"):rep(#s) end) end },
    { "an ES256 signature short by one byte", "bad_signature", function()
      return resigned(signed(nil, fx.ec_signer, { alg = "ES256" }), function(s) return s:sub(1, -2) end),
        fx.ec_set
    end },
    { "an ES256 signature with r = s = 0", "bad_signature", function()
      return resigned(signed(nil, fx.ec_signer, { alg = "ES256" }), function() return ("\0"):rep(64) end),
        fx.ec_set
    end },
    { "an ES256 signature with r = s = n, the order of P-256", "bad_signature", function()
      local n = hex_bytes("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551")
      return resigned(signed(nil, fx.ec_signer, { alg = "ES256" }), function() return n .. n end), fx.ec_set
    end },
    { "an ES256 signature in DER form instead of R || S", "bad_signature", function()
      local input = b64('{"alg":"ES256"}') .. "." .. b64(body())
      return input .. "." .. b64(crypto.openssl_sign(fx.ec, input, "sha256")), fx.ec_set
    end },
    { "an HS256 signature short by one byte", "bad_signature", function()
      return resigned(signed(nil, fx.hs_set, { alg = "HS256" }), function(s) return s:sub(1, -2) end),
        fx.hs_set, { algs = { "HS256" } }
    end },
    { "an HS256 signature of a single byte", "bad_signature", function()
      return resigned(signed(nil, fx.hs_set, { alg = "HS256" }), function(s) return s:sub(1, 1) end),
        fx.hs_set, { algs = { "HS256" } }
    end },
    { "an HS256 token with an empty signature", "bad_signature", function()
      return resigned(signed(nil, fx.hs_set, { alg = "HS256" }), function() return "" end),
        fx.hs_set, { algs = { "HS256" } }
    end },
    { "a payload changed after signing", "bad_signature", function()
      local h, _, s = signed():match("^(.-)%.(.-)%.(.*)$")
      return h .. "." .. b64(body('"admin":true')) .. "." .. s
    end },
    { "a token signed by another RSA key", "bad_signature", function()
      return signed(nil, fx.attacker_signer) end },
    { "a token carrying the signer's own public key in a jwk header", "bad_signature", function()
      return signed(nil, fx.attacker_signer, { alg = "RS256", header = { jwk = rsa_jwk(fx.attacker_rsa) } })
    end },
    { "a PKCS#1 v1.5 signature presented as PS256", "bad_signature", function()
      local input = b64('{"alg":"PS256"}') .. "." .. b64(body())
      return input .. "." .. b64(crypto.openssl_sign(fx.rsa, input, "sha256"))
    end },
  })

  verify_cases("times outside the validity window (now is fixed, leeway 60)", {
    { "exp exactly leeway seconds ago", "expired", function()
      return signed { exp = NOW - 60 } end },
    { "exp an hour ago", "expired", function()
      return signed { exp = NOW - 3600 } end },
    { "exp 0", "expired", function()
      return signed { exp = 0, iat = false } end },
    { "exp negative", "expired", function()
      return signed { exp = -1, iat = false } end },
    { "exp the smallest integer", "expired", function()
      return signed { exp = math.mininteger, iat = false } end },
    { "nbf an hour ahead", "not_yet_valid", function()
      return signed { nbf = NOW + 3600 } end },
    { "nbf the largest integer", "not_yet_valid", function()
      return signed { nbf = math.maxinteger } end },
    { "iat an hour ahead", "issued_in_future", function()
      return signed { iat = NOW + 3600 } end },
    { "iat the largest integer", "issued_in_future", function()
      return signed { iat = math.maxinteger } end },
  })

  -- NumericDates are compared as 64-bit integers.  A time that is not a
  -- number, or a number no 64-bit integer can hold (RFC 8259 section 6 lets
  -- a reader limit the range of numbers), is malformed rather than silently
  -- clamped into "never expires" or "always expired".
  verify_cases("times that are not numbers in the 64-bit range", {
    { "exp 1e300", "malformed", function()
      return rs256(HEADER, '{"sub":"alice","exp":1e300}') end },
    { "exp -1e300", "malformed", function()
      return rs256(HEADER, '{"sub":"alice","exp":-1e300}') end },
    { "exp 2^63, one past the largest integer", "malformed", function()
      return rs256(HEADER, '{"sub":"alice","exp":9223372036854775808}') end },
    { "nbf 1e300", "malformed", function()
      return rs256(HEADER, body('"nbf":1e300')) end },
    { "exp a string", "malformed", function()
      return signed { exp = tostring(NOW + 3600) } end },
    { "exp true", "malformed", function()
      return signed { exp = true } end },
    { "nbf null", "malformed", function()
      return signed { nbf = tp.null } end },
    { "iat a list", "malformed", function()
      return signed { iat = { NOW } } end },
  })

  verify_cases("claims the caller's policy does not accept", {
    { "no exp", "missing_claim", function()
      return signed { exp = false } end },
    { "another issuer", "bad_issuer", function()
      return signed { iss = "https://evil.example" }, nil, { iss = ISS } end },
    { "the issuer with a trailing slash", "bad_issuer", function()
      return signed { iss = ISS .. "/" }, nil, { iss = ISS } end },
    { "an issuer that is a list", "bad_issuer", function()
      return signed { iss = { ISS } }, nil, { iss = ISS } end },
    { "no issuer when one is required", "missing_claim", function()
      return signed { iss = false }, nil, { iss = ISS } end },
    { "another audience", "bad_audience", function()
      return signed { aud = "other" }, nil, { aud = "api" } end },
    { "an audience list without ours", "bad_audience", function()
      return signed { aud = { "a", "b", "API" } }, nil, { aud = "api" } end },
    { "an audience that is a number", "bad_audience", function()
      return signed { aud = 7 }, nil, { aud = "api" } end },
    { "no audience when one is required", "missing_claim", function()
      return signed { aud = false }, nil, { aud = "api" } end },
    { "another typ", "bad_type", function()
      return signed(nil, nil, { alg = "RS256", typ = "JWT" }), nil, { typ = "at+jwt" } end },
    { "no typ when one is required", "bad_type", function()
      return rs256('{"alg":"RS256"}', body()), nil, { typ = "at+jwt" } end },
    { "a typ that is a number", "bad_type", function()
      return rs256('{"alg":"RS256","typ":7}', body()), nil, { typ = "at+jwt" } end },
    { "a required claim that is absent", "missing_claim", function()
      return signed(), nil, { require = { "jti" } } end },
  })
end)

describe("tp.verify accepts hostile-looking but valid tokens", function()
  it("exp at the largest integer", function()
    local claims = assert(tp.verify(signed { exp = math.maxinteger }, fx.rsa_set, { now = NOW }))
    assert.are.equal(math.maxinteger, claims.exp)
  end)

  it("negative nbf and iat", function()
    assert.is_table(tp.verify(signed { nbf = -1, iat = -1 }, fx.rsa_set, { now = NOW }))
  end)

  it("exp within the leeway", function()
    assert.is_table(tp.verify(signed { exp = NOW - 59 }, fx.rsa_set, { now = NOW }))
  end)
end)

-- ==== keys ===================================================================

describe("tp.keys refuses", function()
  keys_cases("material that is neither JSON nor PEM, or broken JSON", {
    { "the empty string", "malformed", function() return "" end },
    { "garbage text", "malformed", function() return "this is not a key, just some text" end },
    { "random bytes", "malformed", function() return "\1\2\3" .. crypto.random_bytes(64) end },
    { "a JSON array", "malformed", function() return "[1, 2, 3]" end },
    { "a JSON string", "malformed", function() return '"RSA"' end },
    { "JSON cut off", "malformed", function() return '{"kty":"RSA","n":' end },
    { "JSON with a NUL byte", "malformed", function() return '{"kty":"oct",\0"k":"AAAA"}' end },
    { "material over 1 MiB", "too_large", function()
      return '{"kty":"oct","k":"' .. ("A"):rep(MiB) .. '"}' end },
  })

  keys_cases("JWKs that are incomplete or invalid", {
    { "a JWK without kty", "malformed", function() return '{"kid":"k1","n":"AQAB","e":"AQAB"}' end },
    { "a JWK whose kty is a number", "malformed", function() return '{"kty":3}' end },
    { "a JWK whose kid is a number", "malformed", function()
      return tp.json_encode(rsa_jwk(fx.rsa, { kid = 1 })) end },
    { "an RSA JWK without n", "malformed", function() return '{"kty":"RSA","e":"AQAB"}' end },
    { "an oct JWK without k", "malformed", function() return '{"kty":"oct","kid":"k1"}' end },
    { "an EC JWK whose point is not on the curve", "malformed", function()
      local x, y = ec_point(fx.ec)
      local last = y:byte(-1)
      local jwk = ec_jwk(fx.ec, { y = b64(y:sub(1, -2) .. string.char(last ~ 1)) })
      assert.are.equal(b64(x), jwk.x)
      return tp.json_encode(jwk)
    end },
    { "an EC JWK with coordinates of the wrong length", "malformed", function()
      return tp.json_encode(ec_jwk(fx.ec, { x = b64(crypto.random_bytes(48)) })) end },
    { "a JWK Set whose keys is a number", "malformed", function() return '{"keys": 5}' end },
    { "a JWK Set whose keys is an object", "malformed", function()
      return '{"keys": {"kty":"oct","k":"AAAA"}}' end },
    { "a Lua table JWK Set whose keys is a string", "malformed", function()
      return { keys = "all of them" } end },
    { "a Lua table JWK without kty", "malformed", function()
      return { kid = "k1", k = b64(crypto.random_bytes(32)) } end },
  })

  keys_cases("keys that must not be used for signatures", {
    { "an RSA JWK of 1024 bits", "alg_not_allowed", function()
      return tp.json_encode(rsa_jwk(crypto.rsa_private(1024))) end },
    { "an RSA PEM of 1024 bits", "alg_not_allowed", function()
      return crypto.public_of(crypto.rsa_private(1024)) end },
    { "an X25519 JWK (kty OKP, key agreement)", "alg_not_allowed", function()
      return '{"kty":"OKP","crv":"X25519","x":"' .. b64(crypto.random_bytes(32)) .. '"}' end },
    { "an X25519 JWK given as a Lua table", "alg_not_allowed", function()
      return { kty = "OKP", crv = "X25519", x = b64(crypto.random_bytes(32)) } end },
    { "an X25519 PEM", "alg_not_allowed", function()
      return crypto.run("openssl genpkey -algorithm x25519") end },
    { "an EC PEM on secp256k1", "alg_not_allowed", function()
      return crypto.run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1") end },
    { "a JWK with use enc", "alg_not_allowed", function()
      return tp.json_encode(rsa_jwk(fx.rsa, { use = "enc" })) end },
    { "a JWK with alg RSA-OAEP", "alg_not_allowed", function()
      return tp.json_encode(rsa_jwk(fx.rsa, { alg = "RSA-OAEP" })) end },
    { "a JWK with alg none", "alg_not_allowed", function()
      return tp.json_encode(rsa_jwk(fx.rsa, { alg = "none" })) end },
    { "an HMAC secret of 16 bytes", "alg_not_allowed", function()
      return crypto.hmac_jwk(crypto.random_bytes(16), "short") end },
    { "an HMAC secret of 31 bytes", "alg_not_allowed", function()
      return crypto.hmac_jwk(crypto.random_bytes(31), "short") end },
  })

  keys_cases("PEM that is broken or locked", {
    { "a PEM private key cut off in the middle", "malformed", function()
      local pem = fx.rsa
      return pem:sub(1, #pem // 2) end },
    { "PEM armour around garbage", "malformed", function()
      return "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0\n-----END PUBLIC KEY-----\n" end },
    { "a PEM begin line and nothing else", "malformed", function()
      return "-----BEGIN PUBLIC KEY-----\n" end },
    { "a certificate block holding garbage", "malformed", function()
      return "-----BEGIN CERTIFICATE-----\n" .. b64(crypto.random_bytes(48)) .. "\n-----END CERTIFICATE-----\n"
    end },
    { "an encrypted PKCS#8 private key (no passphrase prompt)", "malformed", function()
      local path = crypto.tmpfile(fx.rsa)
      local pem = crypto.run("openssl pkey -in " .. path .. " -aes256 -passout pass:x </dev/null")
      os.remove(path)
      assert.matches("ENCRYPTED PRIVATE KEY", pem)
      return pem
    end },
    { "an encrypted traditional RSA private key (no passphrase prompt)", "malformed", function()
      local path = crypto.tmpfile(fx.rsa)
      local pem = crypto.run("openssl pkey -traditional -in " .. path .. " -aes256 -passout pass:x </dev/null")
      os.remove(path)
      assert.matches("Proc%-Type: 4,ENCRYPTED", pem)
      return pem
    end },
  })
end)

describe("tp.keys with a JWK Set", function()
  it("skips unusable keys, lists why, and keeps the usable ones", function()
    local good_rsa = rsa_jwk(fx.rsa, { kid = "rsa-good", use = "sig" })
    local _, y = ec_point(fx.ec)
    local material = tp.json_encode { keys = {
      good_rsa,                                                                  -- 1
      { kty = "OKP", crv = "X25519", x = b64(crypto.random_bytes(32)), kid = "ed" },  -- 2
      rsa_jwk(fx.rsa, { kid = "for-enc", use = "enc" }),                         -- 3
      { kty = "oct", k = b64(crypto.random_bytes(16)), kid = "short" },          -- 4
      rsa_jwk(crypto.rsa_private(1024), { kid = "small" }),                      -- 5
      5,                                                                         -- 6
      { kid = "no-kty" },                                                        -- 7
      ec_jwk(fx.ec, { kid = "ec-good" }),                                        -- 8
      ec_jwk(fx.ec, { kid = "off-curve", y = b64(y:sub(1, -2) .. string.char(y:byte(-1) ~ 1)) }), -- 9
      rsa_jwk(fx.rsa, { kid = "oaep", alg = "RSA-OAEP" }),                       -- 10
    } }
    local set = assert(tp.keys(material))
    assert.are.equal(2, #set)
    assert.are.same({ "rsa-good", "ec-good" }, set:kids())
    local skipped = set:skipped()
    local indexes, kids = {}, {}
    for i, entry in ipairs(skipped) do
      indexes[i] = entry.index
      kids[i] = entry.kid or false
      assert.is_string(entry.reason)
      assert.is_true(#entry.reason > 0)
      assert_no_leak(entry.reason, { material })
    end
    assert.are.same({ 2, 3, 4, 5, 6, 7, 9, 10 }, indexes)
    assert.are.same({ "ed", "for-enc", "short", "small", false, "no-kty", "off-curve", "oaep" }, kids)
    assert_no_leak(tostring(set), { material })
    assert.is_false(tp._openssl_error_pending())

    -- The usable keys still work.
    assert.is_table(tp.verify(signed(nil, nil, { alg = "RS256", kid = "rsa-good" }), set, { now = NOW }))
    assert.is_table(tp.verify(signed(nil, fx.ec_signer, { alg = "ES256", kid = "ec-good" }), set, { now = NOW }))
  end)

  it("with no usable key is an empty set that knows no token's key", function()
    local set = assert(tp.keys(tp.json_encode { keys = {
      { kty = "OKP", crv = "X25519", x = b64(crypto.random_bytes(32)) },
      rsa_jwk(fx.rsa, { use = "enc" }),
    } }))
    assert.are.equal(0, #set)
    assert.are.equal(2, #set:skipped())
    local token = signed()
    expect_fail("unknown_key", secret_parts(token), token, tp.verify(token, set, { now = NOW }))
  end)
end)

-- ==== misuse =================================================================

describe("misuse raises an error naming the argument", function()
  local function raises(pattern, f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok, "expected an error")
    assert.is_string(err)
    assert.matches(pattern, err)
    return err
  end

  it("decode without a token", function()
    raises("bad argument #1", tp.decode, nil)
  end)

  it("decode with an unknown option", function()
    raises("bad argument #2.*maxsize", tp.decode, signed(), { maxsize = 10 })
  end)

  it("decode with a max_size that is not a positive integer", function()
    raises("bad argument #2.*max_size", tp.decode, signed(), { max_size = -1 })
  end)

  it("verify with a token that is a number", function()
    raises("bad argument #1", tp.verify, 12345, fx.rsa_set)
  end)

  it("verify with PEM text instead of a KeySet", function()
    local err = raises("bad argument #2", tp.verify, signed(), fx.rsa_public)
    assert_no_leak(err, { fx.rsa_public })
  end)

  it("verify with a plain table instead of a KeySet", function()
    raises("bad argument #2", tp.verify, signed(), {})
  end)

  it("verify with an unknown option", function()
    raises("bad argument #3.*audience", tp.verify, signed(), fx.rsa_set, { audience = "api" })
  end)

  it("verify with algs naming none", function()
    raises("bad argument #3.*algs", tp.verify, signed(), fx.rsa_set, { algs = { "none" } })
  end)

  it("verify with a leeway that is a string", function()
    raises("bad argument #3.*leeway", tp.verify, signed(), fx.rsa_set, { leeway = "60" })
  end)

  it("verify with require_exp that is not a boolean", function()
    raises("bad argument #3.*require_exp", tp.verify, signed(), fx.rsa_set, { require_exp = "no" })
  end)

  it("keys with a number", function()
    raises("bad argument #1", tp.keys, 42)
  end)
end)
