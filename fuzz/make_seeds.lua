--- Makes the token and key seeds of the fuzz corpora (run by hand, from
-- the checkout, after `make`; its output is committed):
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.4/?.so;;' lua5.4 fuzz/make_seeds.lua
--
-- Private keys are made with the openssl CLI in a temporary directory and
-- thrown away: only public keys are committed (fuzz/verify.jwks), with the
-- HMAC secret of the verify target (a fuzzing fixture, never a real
-- secret).  The tokens it signs are the only ones the verify target's
-- oracle accepts (fuzz/verify.lua).
local tp = require "tokenpolicy"

local dir = assert(io.popen("mktemp -d"):read("l"))

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>/dev/null"))
  local out = p:read("a")
  assert(p:close(), cmd)
  return out
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function genpkey(args)
  return run("openssl genpkey " .. args)
end

local function public_pem(private)
  write(dir .. "/k.pem", private)
  return run("openssl pkey -pubout -in " .. dir .. "/k.pem")
end

local rsa = genpkey("-algorithm RSA -pkeyopt rsa_keygen_bits:2048")
local p256 = genpkey("-algorithm EC -pkeyopt ec_paramgen_curve:P-256")
local p384 = genpkey("-algorithm EC -pkeyopt ec_paramgen_curve:P-384")
local ed = genpkey("-algorithm ED25519")
-- 64 bytes: enough for HS512.
local SECRET = "fuzz-only-hmac-secret-0123456789-not-a-real-secret-0123456789abcdef"
local hmac_jwk = tp.json_encode { kty = "oct", kid = "hmac", k = tp.b64url_encode(SECRET) }

local signers = {
  { tp.keys(rsa, { kid = "rsa" }), { "RS256", "RS384", "RS512", "PS256", "PS512" } },
  { tp.keys(p256, { kid = "p256" }), { "ES256" } },
  { tp.keys(p384, { kid = "p384" }), { "ES384" } },
  { tp.keys(ed, { kid = "ed" }), { "EdDSA" } },
  { assert(tp.keys(hmac_jwk)), { "HS256", "HS384", "HS512" } },
}

-- The public key set of the verify target: every public key as PEM, in one
-- JSON file with the HMAC JWK (fuzz/verify.lua loads both).
local pems = public_pem(rsa) .. public_pem(p256) .. public_pem(p384) .. public_pem(ed)
write("fuzz/verify-keys.json", tp.json_encode {
  comment = "Public keys of the verify fuzz target and a fuzzing-only HMAC secret; made by fuzz/make_seeds.lua",
  pem = pems, kids = { "rsa", "p256", "p384", "ed" }, hmac = hmac_jwk,
})

local NOW = 1800000000  -- fuzz/verify.lua verifies at this time
local claims = {
  { iss = "https://op.example", sub = "alice", aud = "api", exp = NOW + 3600, iat = NOW - 60, nbf = NOW - 60,
    jti = "j-1", scope = "read write", ["wlcg.ver"] = "1.0", groups = { "/atlas", "/cms" } },
  { iss = "https://op.example", sub = "bob", aud = { "api", "other" }, exp = NOW + 60, iat = NOW },
  { sub = "carol", exp = NOW - 10 },             -- expired within the leeway
  { sub = "dave", exp = NOW - 3600 },            -- expired
  { sub = "erin", nbf = NOW + 3600, exp = NOW + 7200 },
  { sub = "frank", exp = 1.8e9 + 0.5, iat = -1, ["x\u{e9}"] = { a = { b = { c = { 1, 2, tp.null } } } } },
}

local n = 0
local signed = {}
for _, signer in ipairs(signers) do
  for _, alg in ipairs(signer[2]) do
    for i, c in ipairs(claims) do
      if i <= 2 or alg == "RS256" or alg == "ES256" or alg == "HS256" then
        local opts = { alg = alg }
        if i == 2 then opts.typ = "at+jwt" end
        local token = assert(tp.sign(c, signer[1], opts))
        n = n + 1
        write(("fuzz/corpus/verify/%02d-%s"):format(n, alg), token)
        signed[#signed + 1] = token
        if i == 1 then write(("fuzz/corpus/decode/%s"):format(alg), token) end
      end
    end
  end
end

-- The list the verify target trusts (its corpus may grow; this does not).
write("fuzz/verify-tokens.txt", table.concat(signed, "\n") .. "\n")

-- Keys: the public PEMs, a JWKS of each kind, a certificate.
write("fuzz/corpus/keys/pem-rsa", public_pem(rsa))
write("fuzz/corpus/keys/pem-ec", public_pem(p256))
write("fuzz/corpus/keys/pem-ed25519", public_pem(ed))
write(dir .. "/k.pem", rsa)
write("fuzz/corpus/keys/cert", run("openssl req -x509 -new -key " .. dir .. "/k.pem -subj /CN=fuzz -days 1"))
write("fuzz/corpus/keys/jwk-oct", hmac_jwk)
-- A JWKS the way providers publish them: public JWKs (from node's jose
-- would do too; here from the key sets' own facts is not possible, so the
-- JWK form is made by openssl's parameters).
local function b64(hex)
  return tp.b64url_encode((hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)))
end
write(dir .. "/k.pem", rsa)
local mod = run("openssl rsa -in " .. dir .. "/k.pem -noout -modulus"):match("Modulus=(%x+)")
write(dir .. "/k.pem", p256)
local text = run("openssl ec -in " .. dir .. "/k.pem -pubout -outform DER | od -An -tx1 | tr -d ' \\n'")
local point = text:sub(-130)  -- 04 || X || Y
local jwks = tp.json_encode { keys = {
  { kty = "RSA", kid = "rsa", use = "sig", alg = "RS256", n = b64(mod), e = "AQAB" },
  { kty = "EC", kid = "p256", crv = "P-256", x = b64(point:sub(3, 66)), y = b64(point:sub(67, 130)) },
  { kty = "OKP", kid = "ed", crv = "Ed25519", x = tp.b64url_encode(("\0"):rep(32)) },
  { kty = "RSA", kid = "enc", use = "enc", n = b64(mod), e = "AQAB" },
  { kty = "oct", kid = "hmac", k = tp.b64url_encode(SECRET), key_ops = { "verify" } },
} }
assert(tp.keys(jwks))
write("fuzz/corpus/keys/jwks", jwks)
write("fuzz/corpus/keys/jwk-rsa", tp.json_encode(tp.json_decode(jwks).keys[1]))
os.execute("rm -rf '" .. dir .. "'")
print(("%d tokens, keys written"):format(n))
