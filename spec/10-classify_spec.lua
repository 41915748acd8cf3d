-- classify: what kind of token a string is, and never its secret.
local tp = require "tokenpolicy"
local classify = require("tokenpolicy.classify").classify

local b64 = tp.b64url_encode
local HEX = "0123456789abcdef0123456789abcdef"
local V2_SECRET = "3kg6k6lzmp9kj5cpkcoxie6ms6sc3a6x4ikqpdotm2zm7dm0hn"
local TOKEN_UUID = "zzzzz-gj3su-0123456789abcde"
local CONTAINER_UUID = "zzzzz-dz642-abcdefghij01234"

local function hs256(claims)
  local keys = assert(tp.keys('{"kty":"oct","kid":"k1","k":"' .. b64(("k"):rep(32)) .. '"}'))
  return assert(tp.sign(claims, keys, { alg = "HS256" }))
end

local function jws(header, payload, signature)
  return b64(header) .. "." .. b64(payload) .. "." .. b64(signature)
end

-- { name, token, expected, secret }: `secret` is the part that must not
-- appear in any field of the result.
local function cases()
  local signed = hs256({ iss = "https://idp.example.org", sub = "jdoe", exp = 1700000000 })
  local no_kid = jws('{"alg":"HS256","typ":"JWT"}', '{"sub":"svc"}', "hmac-output-secret")
  local unsecured = b64('{"alg":"none"}') .. "." .. b64('{"sub":"anon","exp":1700000000}') .. "."
  local rucio_x509 = "root-/DC=ch/DC=cern/OU=Users/CN=Joe Doe-unknown-" .. HEX
  return {
    { "a signed JWT: header and identity claims", signed,
      { kind = "jwt", alg = "HS256", kid = "k1", iss = "https://idp.example.org", sub = "jdoe",
        exp = 1700000000, decoded = true },
      signed:match("[^.]+$") },
    { "a JWT read from a file with a trailing newline", "  " .. signed .. "\n",
      { kind = "jwt", alg = "HS256", kid = "k1", iss = "https://idp.example.org", sub = "jdoe",
        exp = 1700000000, decoded = true },
      signed:match("[^.]+$") },
    { "a JWT without kid or iss", no_kid,
      { kind = "jwt", alg = "HS256", sub = "svc", decoded = true },
      no_kid:match("[^.]+$") },
    { "an unsecured JWT (empty signature)", unsecured,
      { kind = "jwt", alg = "none", sub = "anon", exp = 1700000000, decoded = true },
      unsecured },
    { "a fractional exp is rounded down", jws('{"alg":"ES256"}', '{"exp":1700000000.9}', "sig-bytes-secret"),
      { kind = "jwt", alg = "ES256", exp = 1700000000, decoded = true },
      b64("sig-bytes-secret") },
    { "claims of the wrong type are left out", jws('{"alg":"RS256","kid":7}', '{"iss":1,"sub":["a"],"exp":"soon"}',
      "signature-secret"),
      { kind = "jwt", alg = "RS256", decoded = true },
      b64("signature-secret") },
    { "a JSON header over a payload that is not JSON", jws('{"alg":"RS256","kid":"x"}', "not json", "sig-secret"),
      { kind = "jwt", alg = "RS256", kid = "x", decoded = false },
      b64("sig-secret") },
    { "three parts whose header is a JSON array", jws("[1]", "{}", "sig"), { kind = "opaque" } },
    { "three parts whose header is not base64url", "a+b." .. b64("{}") .. ".c", { kind = "opaque" } },
    { "five parts (a JWE)", "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", { kind = "opaque" } },
    { "Rucio, an X.509 identity with spaces and '/'", rucio_x509,
      { kind = "rucio", account = "root", identity = "/DC=ch/DC=cern/OU=Users/CN=Joe Doe", app_id = "unknown" },
      HEX },
    { "Rucio, an email identity", "jdoe-jdoe@example.org-myapp-" .. HEX,
      { kind = "rucio", account = "jdoe", identity = "jdoe@example.org", app_id = "myapp" },
      HEX },
    { "Rucio, an identity with '-' and ':'", "ddmadmin-/CN=Anne-Marie:robot-rucio_webui-" .. HEX,
      { kind = "rucio", account = "ddmadmin", identity = "/CN=Anne-Marie:robot", app_id = "rucio_webui" },
      HEX },
    { "Rucio, surrounded by whitespace", "\t" .. rucio_x509 .. " \r\n",
      { kind = "rucio", account = "root", identity = "/DC=ch/DC=cern/OU=Users/CN=Joe Doe", app_id = "unknown" },
      HEX },
    { "Rucio needs 32 hex digits", "jdoe-jdoe-myapp-" .. HEX:sub(2), { kind = "opaque" } },
    { "Rucio needs account, identity and application", "jdoe-myapp-" .. HEX, { kind = "opaque" } },
    { "Arvados v2", "v2/" .. TOKEN_UUID .. "/" .. V2_SECRET,
      { kind = "arvados_v2", uuid = TOKEN_UUID },
      V2_SECRET },
    { "Arvados v2 for a container", "v2/" .. TOKEN_UUID .. "/" .. V2_SECRET .. "/" .. CONTAINER_UUID,
      { kind = "arvados_v2", uuid = TOKEN_UUID, container_uuid = CONTAINER_UUID },
      V2_SECRET },
    { "Arvados v2 with a malformed uuid", "v2/zzzzz-gj3su-0123/" .. V2_SECRET, { kind = "opaque" } },
    { "Arvados v2 with a malformed container uuid", "v2/" .. TOKEN_UUID .. "/" .. V2_SECRET .. "/x",
      { kind = "opaque" } },
    { "Arvados v2 with an empty secret", "v2/" .. TOKEN_UUID .. "//" .. CONTAINER_UUID, { kind = "opaque" } },
    { "Arvados v1: a bare base-36 secret", V2_SECRET, { kind = "arvados_v1" }, V2_SECRET },
    { "a short alphanumeric string is not an Arvados secret", "abc123def456", { kind = "opaque" } },
    { "a string with inner spaces", "not a token at all", { kind = "opaque" } },
    { "an empty string", "", { kind = "opaque" } },
    { "only whitespace", " \t\n\v\f\r", { kind = "opaque" } },
  }
end

local function fields_contain(result, secret)
  for name, value in pairs(result) do
    if type(value) == "string" and value:find(secret, 1, true) then
      return name
    end
  end
end

describe("classify", function()
  after_each(function() collectgarbage() end)

  local list = cases()
  for _, case in ipairs(list) do
    local name, token, want, secret = case[1], case[2], case[3], case[4]
    it(name, function()
      local got = classify(token)
      assert.are.same(want, got)
      local stripped = token:match("^%s*(.-)%s*$")
      if stripped ~= "" then
        assert.is_nil(fields_contain(got, stripped))
      end
      if secret then
        assert.is_nil(fields_contain(got, secret))
      end
    end)
  end

  it("has at least 15 cases", function()
    assert.is_true(#list >= 15)
  end)

  it("is the facade's classify", function()
    assert.are.equal(classify, tp.classify)
    assert.are.same({ kind = "arvados_v1" }, tp.classify(V2_SECRET))
  end)

  it("raises on a non-string, naming the argument", function()
    assert.has_error(function() classify(nil) end, "bad argument #1 to 'classify' (string expected, got nil)")
    assert.has_error(function() classify(42) end, "bad argument #1 to 'classify' (string expected, got number)")
  end)
end)
