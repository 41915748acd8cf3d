-- luacheck: globals FUZZ_ROOT
-- verify with fixed RSA, EC, EdDSA and HMAC keys (fuzz/verify-keys.json),
-- every algorithm allowed.
--
-- The oracle: a token the harness did not sign is never accepted.  The
-- tokens signed with these keys are exactly those of fuzz/verify-tokens.txt
-- (made by fuzz/make_seeds.lua, whose private keys were thrown away, with
-- a copy of each in the seed corpus fuzz/corpus/verify/).  A token that verifies must be one of
-- them, once stripped of what verify strips (surrounding whitespace, a
-- "Bearer " scheme): any other text (a changed byte, a non-canonical
-- base64url form of the same bytes, another alg for the same key) must
-- fail.
--
-- Also differential: the prepared verifier (v:check, with and without its
-- cache) and a JwksSource fed the same keys must give tp.verify's exact
-- result (docs/api.md: the same codes and messages).
local tp = require "tokenpolicy.core"
local F = require "fuzzlib"

local NOW = 1800000000
local ALGS = { "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
  "HS256", "HS384", "HS512" }

local fixture = tp.json_decode(F.read(FUZZ_ROOT .. "/fuzz/verify-keys.json"))
local pem = assert(tp.keys(fixture.pem))
-- One JWK Set of every key with its kid: PEM keys come without kids, so
-- each PEM block is loaded alone and listed under its kid.
local jwks_keys = { tp.json_decode(fixture.hmac) }
local blocks = {}
for block in fixture.pem:gmatch("%-%-%-%-%-BEGIN.-%-%-%-%-%-END[^\n]*\n") do blocks[#blocks + 1] = block end
assert(#blocks == #fixture.kids and #pem == #blocks)
local sets = { assert(tp.keys(fixture.hmac)) }
for i, block in ipairs(blocks) do sets[#sets + 1] = assert(tp.keys(block, { kid = fixture.kids[i] })) end
local combined = table.concat(blocks)
local keyset = assert(tp.keys(combined))  -- kid-less PEM keys: every token tries every key

-- The signed tokens, one per line (the corpus holds copies, which a run
-- of the binary on that directory adds to: never the list trusted here).
local signed = {}
for token in F.read(FUZZ_ROOT .. "/fuzz/verify-tokens.txt"):gmatch("[^\n]+") do signed[token] = true end
assert(next(signed), "no signed tokens")

local SPACE = "[ \t\n\v\f\r]"
local function stripped(s)
  s = s:gsub("^" .. SPACE .. "+", ""):gsub(SPACE .. "+$", "")
  s = s:gsub("^[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+", "")
  return (s:gsub("^" .. SPACE .. "+", ""))
end

local OPTS = { algs = ALGS, now = NOW, require_exp = false }
local hmac_set = sets[1]
local fed = tp.jwks {}
assert(fed:set_keys(tp.json_encode { keys = jwks_keys }))
-- The differential pairs: verify with these keys and options, and the
-- prepared verifier made with the same.
local CHECKED = { iss = "https://op.example", aud = { "api", "x" }, leeway = 30, require = { "sub" }, typ = "at+jwt" }
local verifiers = {
  { "verifier", hmac_set, OPTS, tp.verifier { keys = hmac_set, algs = ALGS, require_exp = false } },
  { "verifier(cache)", hmac_set, OPTS,
    tp.verifier { keys = hmac_set, algs = ALGS, require_exp = false, cache = 8 } },
  { "verifier(all keys)", keyset, OPTS, tp.verifier { keys = keyset, algs = ALGS, require_exp = false } },
  { "verifier(claims)", sets[1], { algs = ALGS, now = NOW, iss = CHECKED.iss, aud = CHECKED.aud,
    leeway = CHECKED.leeway, require = CHECKED.require },
    tp.verifier { keys = sets[1], algs = ALGS, iss = CHECKED.iss, aud = CHECKED.aud, leeway = CHECKED.leeway,
      require = CHECKED.require, cache = 4 } },
  { "verifier(typ)", sets[1], { algs = ALGS, now = NOW, typ = CHECKED.typ, require_exp = false },
    tp.verifier { keys = sets[1], algs = ALGS, typ = CHECKED.typ, require_exp = false } },
}

local function accepted(what, token, claims, header)
  if not signed[stripped(token)] then
    F.finding(what, "accepted a token the harness did not sign: " .. ("%q"):format(token:sub(1, 300)))
  end
  if type(claims) ~= "table" and type(claims) ~= "userdata" then F.finding(what, "claims not a table") end
  F.tostring(what .. " claims", claims)
  F.tostring(what .. " header", header)
end

local function same(what, a, b)
  for i = 1, 3 do
    local x, y = a[i], b[i]
    if i == 1 then x, y = x ~= nil, y ~= nil end
    if i == 2 and a[1] ~= nil then x, y = true, true end  -- headers: compared by the oracle above
    if x ~= y then
      F.finding(what, ("verify gave %s, %s but %s gave %s, %s"):format(tostring(a[2]), tostring(a[3]), what,
        tostring(b[2]), tostring(b[3])))
    end
  end
end

return function(data)
  -- Every key, kid-less (all tried), and each key alone under its kid.
  local claims, header = F.result("verify", tp.verify(data, keyset, OPTS))
  if claims then accepted("verify", data, claims, header) end
  for _, set in ipairs(sets) do
    local r = table.pack(F.result("verify", tp.verify(data, set, OPTS)))
    if r[1] then accepted("verify(one key)", data, r[1], r[2]) end
  end
  -- A JwksSource fed the same keys as a JWK Set.
  local r = table.pack(F.result("verify(jwks)", tp.verify(data, fed, OPTS)))
  if r[1] then accepted("verify(jwks)", data, r[1], r[2]) end
  -- The prepared verifier gives verify's exact answer, cached or not.
  for _, v in ipairs(verifiers) do
    local base = table.pack(tp.verify(data, v[2], v[3]))
    for _ = 1, 2 do
      local got = table.pack(F.result(v[1], v[4]:check(data, NOW)))
      if got[1] then accepted(v[1], data, got[1], got[2]) end
      same(v[1], base, got)
    end
  end
  -- decode agrees: what verifies decodes; what does not decode never verifies.
  local jwt = tp.decode(data)
  if claims and not jwt then F.finding("decode", "refuses a token verify accepted") end
  if not jwt and r[1] then F.finding("verify", "accepted a token decode refuses") end
end
