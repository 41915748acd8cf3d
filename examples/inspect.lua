-- Inspect a token: decode it, show its header and claims and when it
-- expires, and verify it against a key set (a JWK Set file). Never prints
-- the token itself.
--
-- Run from the checkout (after `make`):
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.4/?.so;;' lua5.4 examples/inspect.lua
-- which inspects examples/sample/token.jwt against examples/sample/jwks.json
-- at the current time. Arguments, all optional, in this order:
--   TOKEN_FILE  a file holding the token (read as tokenpolicy reads token files)
--   JWKS_FILE   the issuer's key set (a JWK Set, a JWK, or PEM public keys)
--   NOW         the time to judge at, in epoch seconds (the sample token is
--               valid from 1800000000, 2027-01-15 08:00 UTC, for one hour)
-- Exit status: 0 when the token verifies, 1 when it does not, 2 when a file
-- cannot be read.
local tp = require "tokenpolicy"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local token_file = arg[1] or (here .. "/sample/token.jwt")
local keys_file = arg[2] or (here .. "/sample/jwks.json")
local now = arg[3] and math.tointeger(tonumber(arg[3])) or os.time()

local function utc(epoch)
  return os.date("!%Y-%m-%d %H:%M:%S UTC", epoch)
end

-- A claim's value as a person reads it: times as dates, lists joined.
local TIMES = { exp = true, iat = true, nbf = true, auth_time = true }
local function shown(name, value)
  if TIMES[name] and math.type(value) == "integer" then
    return utc(value)
  elseif type(value) == "table" then
    local all_strings = #value > 0
    for _, item in ipairs(value) do all_strings = all_strings and type(item) == "string" end
    return all_strings and table.concat(value, ", ") or tp.json_encode(value)
  elseif value == tp.null then
    return "null"
  end
  return tostring(value)
end

local function section(title, members)
  print(title)
  local names = {}
  for name in pairs(members) do names[#names + 1] = name end
  table.sort(names)
  local width = 0
  for _, name in ipairs(names) do width = math.max(width, #name) end
  for _, name in ipairs(names) do
    print(("  %-" .. width .. "s  %s"):format(name, shown(name, members[name])))
  end
end

-- Token files are read as tokenpolicy reads them: no link followed, the
-- owner checked; a file others can read is read, with a warning.
local token, info = tp.read_token(token_file, { allow_insecure = true })
if not token then
  io.stderr:write(token_file, ": ", info, "\n")
  os.exit(2)
end
if info.warning then
  io.stderr:write("warning: ", info.warning, "\n")
end
print(("token   %s (%d bytes, %s)"):format(token_file, #token, tp.classify(token).kind))

-- decode does not verify: what it shows is what the token claims.
local jwt, why = tp.decode(token)
if not jwt then
  print("decode  " .. why)
  os.exit(1)
end
section("header", jwt.header)
section("claims", jwt.claims)

local exp = jwt.claims.exp
if math.type(exp) ~= "integer" then
  print("expiry  none: the token never expires")
elseif exp > now then
  print(("expiry  %s: valid for %s more"):format(utc(exp), tp.format_duration(exp - now)))
else
  print(("expiry  %s: expired %s ago"):format(utc(exp), tp.format_duration(now - exp)))
end

local material, why_not = tp.read_config(keys_file)
local keys
if material then
  keys, why_not = tp.keys(material)
end
if not keys then
  io.stderr:write(keys_file, ": ", why_not, "\n")
  os.exit(2)
end
-- No iss or aud given: this checks the signature and the times only. A
-- service would also pass iss = its issuer and aud = its own name.
local claims, header = tp.verify(token, keys, { now = now })
if claims then
  print(("verify  ok: %s signature by key %s of %s (%d keys), subject %s"):format(header.alg,
    tostring(header.kid), keys_file, #keys, tostring(claims.sub)))
else
  print("verify  refused: " .. header)
  os.exit(1)
end
