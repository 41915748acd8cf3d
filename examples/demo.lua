-- make demo: mint a token with a fresh key, show what is in it, verify it,
-- and show what verify says about tokens that must not pass.
local tp = require "tokenpolicy"

local function section(title)
  io.write("\n== ", title, "\n")
end

-- A fresh P-256 key from the openssl CLI; nothing secret is kept on disk.
local pipe = assert(io.popen("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null"))
local pem = pipe:read("a")
pipe:close()
local key = assert(tp.keys(pem, { kid = "demo-2026" }))
section("key set")
print(key)

local now = os.time()
local token = assert(tp.sign({
  iss = "https://idp.example.org",
  sub = "alice",
  aud = { "rucio", "fts" },
  scope = "storage.read:/ storage.create:/home/alice",
  iat = now,
  nbf = now,
  exp = now + 3600,
  jti = "demo-0001",
}, key, { typ = "at+jwt" }))

section("decoded (not verified)")
print(tp.decode(token))

section("verified")
local claims, header = tp.verify(token, key, { iss = "https://idp.example.org", aud = "rucio", typ = "at+jwt" })
assert(claims, header)
print(("signature %s by key %s, subject %s, valid until %s UTC"):format(
  header.alg, header.kid, claims.sub, os.date("!%Y-%m-%d %H:%M:%S", claims.exp)))

section("refused")
local function show(label, ...)
  local _, message = ...
  print(("%-30s %s"):format(label, message))
end
show("an hour after expiry:", tp.verify(token, key, { now = now + 7200 }))
show("for another audience:", tp.verify(token, key, { aud = "dcache" }))
-- Change one character in the middle of the payload (the claims).
local at = token:find(".", 1, true) + 20
local forged = token:sub(1, at - 1) .. (token:sub(at, at) == "A" and "B" or "A") .. token:sub(at + 1)
show("with one claim byte changed:", tp.verify(forged, key))
show("unsigned (alg none):", tp.verify(tp.b64url_encode('{"alg":"none"}') .. "."
  .. tp.b64url_encode('{"sub":"mallory"}') .. ".", key))
