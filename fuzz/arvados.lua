-- policy_from_arvados on YAML text: a Policy (with a list of warnings) or
-- the fail triple, from the file and from the parsed table alike; the
-- policy prints and judges a record without raising.
local tp = require "tokenpolicy"
local F = require "fuzzlib"

local ok_yaml, lyaml = pcall(require, "lyaml")
assert(ok_yaml, "the arvados target needs lyaml (Debian: lua-yaml)")

local function check(what, p, warnings)
  if not p then return end
  if type(warnings) ~= "table" then F.finding(what, "warnings is not a list") end
  F.tostring(what, p)
  local now = 1800000000
  F.result("evaluate", p:evaluate({ created_at = now - 86400, expires_at = tp.null, last_used_at = now - 60 }, now))
  local record = { expires_at = tp.null, created_at = now, owner_uuid = "zzzzz-tpzed-000000000000001" }
  F.result("long_lived", p:long_lived(record, now))
end

return function(data)
  local path = F.write("config.yml", data)
  local p, warnings = F.result("policy_from_arvados", tp.policy_from_arvados(path))
  check("policy_from_arvados", p, warnings)
  local parsed, doc = pcall(lyaml.load, data)
  if parsed and type(doc) == "table" then
    local p2, w2 = F.result("policy_from_arvados(table)", tp.policy_from_arvados(doc))
    check("policy_from_arvados(table)", p2, w2)
    if (p == nil) ~= (p2 == nil) then
      F.finding("policy_from_arvados", "the file and its parsed table disagree")
    end
    F.result("policy_from_arvados(cluster)", tp.policy_from_arvados(doc, { cluster = "zzzzz", compat = "arvados" }))
  end
end
