-- keys: any material (JWK, JWK Set, PEM) gives a KeySet or the fail
-- triple; a KeySet's methods and printed forms never raise, and a set
-- loaded from the material again is the same (loading is deterministic).
local tp = require "tokenpolicy.core"
local F = require "fuzzlib"

local TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYSJ9.eyJzdWIiOiJhIn0.c2ln"

local function check_set(what, set)
  local n = #set
  if math.type(n) ~= "integer" or n < 0 then F.finding(what, "#set is " .. tostring(n)) end
  local kids, list, skipped = set:kids(), set:list(), set:skipped()
  if #list ~= n then F.finding(what, ("#set is %d but list() has %d"):format(n, #list)) end
  if #kids > n then F.finding(what, "more kids than keys") end
  F.tostring(what, set)
  F.tostring(what .. ":list()", list)
  F.tostring(what .. ":skipped()", skipped)
  for _, k in ipairs(list) do F.tostring(what .. " entry", k) end
  for _, s in ipairs(skipped) do F.tostring(what .. " skipped entry", s) end
  -- Using the set never raises either.
  F.result("verify", tp.verify(TOKEN, set, { algs = { "RS256", "HS256", "ES256", "EdDSA" } }))
  return tostring(set)
end

return function(data)
  local set = F.result("keys", tp.keys(data))
  local text = set and check_set("keys", set)
  local again = F.result("keys again", tp.keys(data))
  if (set == nil) ~= (again == nil) or (set and tostring(again) ~= text) then
    F.finding("keys", "loading the same material twice gave different sets")
  end
  F.result("keys(kid, max_keys)", tp.keys(data, { kid = "k", max_keys = 3 }))
  -- The same material as a Lua table, when it is JSON.
  local t = tp.json_decode(data)
  if type(t) == "table" then
    local tset = F.result("keys(table)", tp.keys(t))
    if tset then
      local ttext = check_set("keys(table)", tset)
      -- The same JWK as text or as a table is the same key set.
      if text and ttext ~= text then
        F.finding("keys(table)", ("the text gives %s, the table %s"):format(text, ttext))
      end
    end
  end
  -- A JwksSource fed the material: set_keys answers as keys does.
  local src = tp.jwks {}
  local ok = F.result("set_keys", src:set_keys(data))
  F.tostring("tostring(source)", src)
  if ok and not set and data:find("^%s*{") then
    -- set_keys may accept only JWK Sets; it must not accept what keys refuses.
    F.finding("set_keys", "accepted material keys refuses")
  end
end
