--- Tell what kind of bearer token a string is, without revealing it.
--
-- The result names the kind and the parts that are not secret: a JWT's
-- header and identity claims, a Rucio token's account, identity and
-- application, an Arvados v2 token's uuids. The secret part (a JWT's
-- signature, Rucio's random suffix, Arvados' secret) is never copied into
-- the result.
-- @module tokenpolicy.classify

local core = require "tokenpolicy.core"
local util = require "tokenpolicy.util"

-- C isspace() in the "C" locale.
local SPACE = "[ \t\n\v\f\r]"
local NOT_SPACE = "[^ \t\n\v\f\r]"

local B64URL = "^[%w_-]*$"
-- An Arvados uuid: cluster id, object type, 15 characters, all base-36.
local UUID = "%w%w%w%w%w%-%w%w%w%w%w%-" .. ("%w"):rep(15)
local UUID_ONLY = "^" .. UUID .. "$"
-- Arvados makes secrets with rand(2**256).to_s(36): about 50 base-36
-- characters; anything shorter than 32 is not one of them.
local MIN_V1_SECRET = 32

local function strip(s)
  local first = s:find(NOT_SPACE)
  if not first then
    return ""
  end
  local last = #s
  while s:sub(last, last):find(SPACE) do
    last = last - 1
  end
  return s:sub(first, last)
end

local function typed(value, want)
  return type(value) == want and value or nil
end

-- NumericDate may be fractional; times here are integer seconds, and
-- rounding down errs on the side of "expired".
local function seconds(value)
  if math.type(value) == "float" and value == value and value > -2^63 and value < 2^63 then
    return math.tointeger(math.floor(value))
  end
  return math.type(value) == "integer" and value or nil
end

-- Three base64url parts (the signature may be empty: an unsecured JWT)
-- and a header that is a JSON object.
local function jwt(token)
  local h, p, s = token:match("^([^.]+)%.([^.]+)%.([^.]*)$")
  if not h or not h:find(B64URL) or not p:find(B64URL) or not s:find(B64URL) then
    return nil
  end
  local json = core.b64url_decode(h)
  if not json or not json:find("^[ \t\n\r]*{") then
    return nil
  end
  local header = core.json_decode(json)
  if type(header) ~= "table" then
    return nil
  end
  local result = {
    kind = "jwt",
    alg = typed(header.alg, "string"),
    kid = typed(header.kid, "string"),
    decoded = false,
  }
  -- decode() is stricter (payload, signature, header members); when it
  -- refuses, the header alone still says what this is.
  local token_obj = core.decode(token)
  if token_obj then
    local claims = token_obj.claims
    result.decoded = true
    result.iss = typed(claims.iss, "string")
    result.sub = typed(claims.sub, "string")
    result.exp = seconds(claims.exp)
  end
  return result
end

-- "v2/<token uuid>/<secret>[/<container uuid>]"
local function arvados_v2(token)
  local rest = token:match("^v2/(.*)$")
  if not rest then
    return nil
  end
  local parts = {}
  for part in (rest .. "/"):gmatch("([^/]*)/") do
    parts[#parts + 1] = part
  end
  local uuid, secret, container = parts[1], parts[2], parts[3]
  if #parts < 2 or #parts > 3 or not uuid:find(UUID_ONLY) or not secret:find("^%w+$")
      or (container and not container:find(UUID_ONLY)) then
    return nil
  end
  return { kind = "arvados_v2", uuid = uuid, container_uuid = container }
end

-- "<account>-<identity>-<appid>-<32 hex>": Rucio's server joins them with
-- "-" and the identity (a DN, an email address, a user name) may contain
-- anything printable, "-" included. Accounts and application ids do not
-- contain "-" in practice, so the account ends at the first "-" and the
-- application id starts after the last one.
local function rucio(token)
  local head = token:match("^(.+)%-" .. ("%x"):rep(32) .. "$")
  if not head or head:find("[%c]") then
    return nil
  end
  local account, middle = head:match("^([^-%s]+)%-(.+)$")
  if not account then
    return nil
  end
  local identity, app_id = middle:match("^(.+)%-([^-%s]+)$")
  if not identity then
    return nil
  end
  return { kind = "rucio", account = account, identity = identity, app_id = app_id }
end

-- Printing: the kind and the parts that are not secret, one line.
local Classification = { __name = "tokenpolicy.Classification" }

local function utc(t)
  local ok, text = pcall(os.date, "!%Y-%m-%d %H:%M:%S UTC", t)
  return ok and text or tostring(t)
end

-- Values that came from the token go through %q: quoted, control
-- characters escaped, so a hostile claim cannot forge a line.
local function quoted(v)
  local s = ("%q"):format(v):gsub("\\\n", "\\n")
  if #s > 80 then
    s = s:sub(1, 76) .. '..."'
  end
  return s
end

--- `tokenpolicy.Classification: jwt (alg "RS256", kid "k1", iss "...",
-- sub "...", exp 2026-11-23 14:52:54 UTC, decoded)`; never a secret,
-- since the result holds none.
function Classification.__tostring(r)
  local parts = {}
  local function add(name, value, show)
    if value ~= nil then
      parts[#parts + 1] = name .. " " .. (show or quoted)(value)
    end
  end
  if r.kind == "jwt" then
    add("alg", r.alg)
    add("kid", r.kid)
    add("iss", r.iss)
    add("sub", r.sub)
    add("exp", r.exp, utc)
    parts[#parts + 1] = r.decoded and "decoded" or "not decodable"
  elseif r.kind == "rucio" then
    add("account", r.account)
    add("identity", r.identity)
    add("app_id", r.app_id)
  elseif r.kind == "arvados_v2" then
    add("uuid", r.uuid)
    add("container_uuid", r.container_uuid)
  end
  local detail = #parts > 0 and (" (" .. table.concat(parts, ", ") .. ")") or ""
  return "tokenpolicy.Classification: " .. tostring(r.kind) .. detail
end

local function classified(result)
  return setmetatable(result, Classification)
end

local M = {}

--- Classify a bearer token.
-- Surrounding whitespace (C `isspace`) is ignored. Kinds are tried in the
-- order jwt, arvados_v2, rucio, arvados_v1; anything else is opaque.
-- @tparam string token the token
-- @treturn table `{kind=...}` plus, for `jwt`: `alg`, `kid`, `iss`, `sub`,
-- `exp` (when present and of the right type) and `decoded` (whether
-- `decode` accepted the whole token); for `rucio`: `account`, `identity`,
-- `app_id`; for `arvados_v2`: `uuid`, `container_uuid`. Never the secret.
-- It prints as one line (`tostring`).
function M.classify(token)
  if type(token) ~= "string" then
    util.argerror(1, "classify", "string expected, got " .. type(token))
  end
  token = strip(token)
  local result = jwt(token) or arvados_v2(token) or rucio(token)
  if result then
    return classified(result)
  end
  if #token >= MIN_V1_SECRET and token:find("^%w+$") then
    return classified({ kind = "arvados_v1" })
  end
  return classified({ kind = "opaque" })
end

return M
