--- Finding secrets in what tokenpolicy shows: every form a secret could
-- take in a message, a log line or a printed table, and a walk over
-- returned values that collects every text a person could see.
--
--   local secrets = require "helpers.secrets"
--   local set = secrets.new()
--   set:add("client secret", "s3cret...")      -- remembers its forms
--   local texts = secrets.texts(ok, err, code)  -- strings, keys, tostring()s
--   local name, form = set:find(table.concat(texts, "\n"))
--
-- A secret is searched raw, JSON-escaped (the form json_encode writes, and
-- with "\/"), percent-encoded (upper and lower hex, "+" for a space),
-- base64 and base64url (padded or not) and, because a secret inside a
-- longer text encodes differently at each of the three byte alignments,
-- the part of the base64 and base64url encodings that depends on the
-- secret alone, at each alignment. A secret added with `pieces` is also
-- searched piecewise: any PIECE characters of it in a row (a message that
-- quotes the first 32 characters of a 43-character token has leaked it).
local tp = require "tokenpolicy"

local secrets = {}

-- The shortest needle searched: shorter inner parts of an encoding would
-- match by chance.
local MIN_NEEDLE = 8

-- The length of the pieces searched for: shorter runs of a random secret
-- do not appear by chance, and no output quotes one on purpose.
local PIECE = 16
secrets.PIECE = PIECE

local function base64url(bytes)
  return tp.b64url_encode(bytes)
end

local function base64(bytes)
  local text = base64url(bytes):gsub("-", "+"):gsub("_", "/")
  return text
end

local function padded(text)
  return text .. ("="):rep((4 - #text % 4) % 4)
end

local function pct(s, lower)
  return (s:gsub("[^%w%-%._~]", function(c)
    return (lower and "%%%02x" or "%%%02X"):format(c:byte())
  end))
end

--- The characters of the base64 (or base64url: `encode`) of `s` preceded
-- by `k` other bytes that depend on `s` alone: the leading characters that
-- mix in the preceding bytes are dropped (0, 2 or 3), and so are the
-- trailing ones that would mix in what follows (only whole groups of
-- three bytes are kept).
-- @tparam string s
-- @tparam integer k 0, 1 or 2
-- @tparam function encode base64 or base64url, unpadded
-- @treturn string
function secrets.inner(s, k, encode)
  local drop = ({ [0] = 0, 2, 3 })[k]
  local text = encode(("\0"):rep(k) .. s)
  local whole = ((k + #s) // 3) * 4
  return text:sub(drop + 1, whole)
end

--- Every form of `s` searched for, as a list of `{form=, text=}`.
-- @tparam string s
-- @treturn table
function secrets.forms(s)
  local list, seen = {}, {}
  local function add(form, text)
    if #text >= math.min(MIN_NEEDLE, #s) and not seen[text] then
      seen[text] = true
      list[#list + 1] = { form = form, text = text }
    end
  end
  add("raw", s)
  local json = tp.json_encode(s):sub(2, -2)
  add("JSON-escaped", json)
  add("JSON-escaped with \\/", (json:gsub("/", "\\/")))
  add("percent-encoded", pct(s))
  add("percent-encoded (lower case)", pct(s, true))
  add("form-encoded", (pct(s):gsub("%%20", "+")))
  add("base64", padded(base64(s)))
  add("base64url", base64url(s))
  for k = 0, 2 do
    add(("base64 at alignment %d"):format(k), secrets.inner(s, k, base64))
    add(("base64url at alignment %d"):format(k), secrets.inner(s, k, base64url))
  end
  return list
end

local Set = {}
Set.__index = Set

--- A new, empty set of secrets.
function secrets.new()
  return setmetatable({ list = {} }, Set)
end

--- Adds a secret under a name; returns it.
-- @tparam string name what it is (for the failure message)
-- @tparam string s the secret
-- @tparam[opt] table opts `pieces`: search every PIECE characters of it
-- in a row too (for secrets with no public part: not a whole JWT, whose
-- header anyone may quote)
-- @treturn string s
function Set:add(name, s, opts)
  assert(type(s) == "string" and #s >= 8, "a secret of 8 bytes or more expected for " .. name)
  local forms = secrets.forms(s)
  if opts and opts.pieces then
    for i = 1, #s - PIECE + 1 do
      forms[#forms + 1] = { form = ("characters %d to %d"):format(i, i + PIECE - 1), text = s:sub(i, i + PIECE - 1) }
    end
  end
  self.list[#self.list + 1] = { name = name, forms = forms }
  return s
end

--- The first secret found in `text` (plain search): its name, the form
-- and a little context; nil when none is there.
-- @tparam string text
function Set:find(text)
  for _, secret in ipairs(self.list) do
    for _, f in ipairs(secret.forms) do
      local at = text:find(f.text, 1, true)
      if at then
        local context = text:sub(math.max(1, at - 40), at + #f.text + 40)
        return secret.name, f.form, context
      end
    end
  end
end

--- The number of secrets in the set.
function Set:count()
  return #self.list
end

-- tostring without raising (a __tostring may raise for a closed object).
local function shown(v)
  local ok, text = pcall(tostring, v)
  return ok and text or ("(tostring raised: " .. tostring(text) .. ")")
end

--- Every text a value shows: strings and numbers as they are, tables
-- walked recursively (keys and values, and their printed form when they
-- have a __tostring), userdata printed and, when they can be walked with
-- pairs, walked too. Cycles are followed once.
-- @param ... the values (a fail triple, a result table...)
-- @treturn table a list of strings
function secrets.texts(...)
  local out, seen = {}, {}
  local function walk(v)
    local t = type(v)
    if t == "string" then
      out[#out + 1] = v
    elseif t == "number" or t == "boolean" then
      out[#out + 1] = tostring(v)
    elseif t == "table" or t == "userdata" then
      if seen[v] then return end
      seen[v] = true
      local mt = getmetatable(v)
      if t == "userdata" or (type(mt) == "table" and mt.__tostring) then
        out[#out + 1] = shown(v)
      end
      if t == "table" then
        for k, x in next, v do
          walk(k)
          walk(x)
        end
      elseif type(mt) == "table" and mt.__pairs then
        local ok, iter, state, first = pcall(mt.__pairs, v)
        if ok then
          for k, x in iter, state, first do
            walk(k)
            walk(x)
          end
        end
      end
    end
  end
  for i = 1, select("#", ...) do
    walk((select(i, ...)))
  end
  return out
end

return secrets
