--- BASELINE for `make bench-haproxy`, configuration (e); not part of tokenpolicy.
--
-- A pure-Lua RS256 verifier built the way haproxy-lua-oauth builds one, on
-- Debian's lua-luaossl and lua-cjson for Lua 5.3: split the token, decode
-- base64url in Lua, `cjson.decode` header and payload, check alg, exp, iss
-- and aud, and verify the signature with luaossl's `pkey:verify` on a
-- digest object.  It is here only to be measured against.
--
-- It is a generous baseline: the public key is parsed once at load (the
-- oauth library parses its PEM on every request), and the base64url decoder
-- works on four characters at a time through a lookup table, like the
-- decoder that library ships, rather than bit by bit.
--
-- Usage, from a `lua-load` file:
--   require("luaossl_baseline").register{ name = "luaossl-auth",
--     key_file = "/path/pub.pem", iss = "...", aud = "..." }
-- then `http-request lua.luaossl-auth`; it sets the variables the
-- tokenpolicy action sets (`txn.tp.ok`, `.code`, `.sub`, `.scope`, `.exp`,
-- `.jti`).
local pkey = require "openssl.pkey"
local digest = require "openssl.digest"
local cjson = require "cjson"

local byte, char, concat, unpack = string.byte, string.char, table.concat, table.unpack
local CHUNK = 4096

local M = {}

-- Character code -> 6-bit value, for the URL-safe alphabet only.
local SEXTET = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  for i = 1, #alphabet do
    SEXTET[byte(alphabet, i)] = i - 1
  end
end

--- Decodes unpadded base64url text.
-- @tparam string s the text
-- @treturn ?string the bytes, or nil when `s` is not base64url
local function base64url_decode(s)
  local len = #s
  local tail = len % 4
  if tail == 1 then
    return nil
  end
  local out, n = {}, 0
  local full = len - tail
  for i = 1, full, 4 do
    local a, b, c, d = byte(s, i, i + 3)
    a, b, c, d = SEXTET[a], SEXTET[b], SEXTET[c], SEXTET[d]
    if not (a and b and c and d) then
      return nil
    end
    local v = a << 18 | b << 12 | c << 6 | d
    out[n + 1], out[n + 2], out[n + 3] = v >> 16, v >> 8 & 255, v & 255
    n = n + 3
  end
  if tail > 0 then
    local a, b, c = byte(s, full + 1, len)
    a, b = SEXTET[a], SEXTET[b]
    if tail == 3 then
      c = SEXTET[c]
    else
      c = 0
    end
    if not (a and b and c) then
      return nil
    end
    local v = a << 18 | b << 12 | c << 6
    out[n + 1], out[n + 2] = v >> 16, v >> 8 & 255
    n = n + tail - 1
  end
  -- string.char takes its bytes as arguments: a chunk at a time.
  local parts = {}
  for i = 1, n, CHUNK do
    parts[#parts + 1] = char(unpack(out, i, math.min(i + CHUNK - 1, n)))
  end
  return concat(parts)
end
M.base64url_decode = base64url_decode

local function decode_json(part)
  local text = base64url_decode(part)
  if not text then
    return nil
  end
  local ok, value = pcall(cjson.decode, text)
  if ok and type(value) == "table" then
    return value
  end
  return nil
end

local function has_audience(aud, wanted)
  if aud == wanted then
    return true
  end
  if type(aud) == "table" then
    for _, a in ipairs(aud) do
      if a == wanted then
        return true
      end
    end
  end
  return false
end

--- Verifies one compact RS256 token.
-- @tparam userdata key a luaossl public key
-- @tparam table opts `iss`, `aud`
-- @tparam string token the compact token
-- @tparam integer now the time
-- @treturn ?table the payload, or nil
-- @treturn ?string why not
function M.verify(key, opts, token, now)
  local dot1 = token:find(".", 1, true)
  local dot2 = dot1 and token:find(".", dot1 + 1, true)
  if not dot2 or token:find(".", dot2 + 1, true) then
    return nil, "malformed"
  end
  local h, p, s = token:sub(1, dot1 - 1), token:sub(dot1 + 1, dot2 - 1), token:sub(dot2 + 1)
  local header = decode_json(h)
  if not header or header.alg ~= "RS256" then
    return nil, "alg_not_allowed"
  end
  local payload = decode_json(p)
  if not payload then
    return nil, "malformed"
  end
  local signature = base64url_decode(s)
  if not signature then
    return nil, "malformed"
  end
  local md = digest.new("sha256")
  md:update(h .. "." .. p)
  if not key:verify(signature, md) then
    return nil, "bad_signature"
  end
  if type(payload.exp) ~= "number" or now >= payload.exp then
    return nil, "expired"
  end
  if payload.iss ~= opts.iss then
    return nil, "bad_issuer"
  end
  if not has_audience(payload.aud, opts.aud) then
    return nil, "bad_audience"
  end
  return payload
end

local function text(v)
  return type(v) == "string" and v or ""
end

--- Registers the HAProxy action `opts.name`.
-- @tparam table opts `name`, `key_file` (PEM public key), `iss`, `aud`
function M.register(opts)
  local f = assert(io.open(opts.key_file, "rb"))
  local key = pkey.new(f:read("a"))
  f:close()
  core.register_action(opts.name, { "http-req" }, function(txn)
    local authorization = txn.sf:req_hdr("authorization")
    -- No Lua pattern here: `(%S+)$` over the whole header would cost more
    -- than the base64url decoding.
    local token
    if authorization and #authorization > 7 and authorization:sub(1, 7):lower() == "bearer " then
      token = authorization:sub(8)
    end
    local payload, code
    if token then
      payload, code = M.verify(key, opts, token, os.time())
    else
      code = "no_token"
    end
    if payload then
      txn:set_var("txn.tp.ok", 1)
      txn:set_var("txn.tp.code", "")
      txn:set_var("txn.tp.sub", text(payload.sub))
      txn:set_var("txn.tp.scope", text(payload.scope))
      txn:set_var("txn.tp.exp", math.tointeger(payload.exp) or 0)
      txn:set_var("txn.tp.jti", text(payload.jti))
    else
      txn:set_var("txn.tp.ok", 0)
      txn:set_var("txn.tp.code", code)
    end
  end, 0)
end

return M
