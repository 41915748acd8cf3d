-- decode + tostring: any text gives a JWT object or the fail triple, and
-- the object (and its header and claims) print without raising; a policy
-- judges the text and the decoded JWT (Policy:evaluate) without raising.
local tp = require "tokenpolicy.core"
local F = require "fuzzlib"

-- A policy judges a compact JWT given as text (decoded first).
local policy = tp.policy { max_token_lifetime = 86400, login_token_lifetime = 3600, idle_timeout = 600,
  refresh_before_exp = 300 }

return function(data)
  local jwt = F.result("decode", tp.decode(data))
  if jwt then
    F.tostring("tostring(jwt)", jwt)
    F.tostring("tostring(jwt.header)", jwt.header)
    F.tostring("tostring(jwt.claims)", jwt.claims)
    if type(jwt.signing_input) ~= "string" or type(jwt.signature) ~= "string" then
      F.finding("decode", "signing_input or signature is not a string")
    end
    -- What decode accepted, json_encode must be able to write back.
    tp.json_encode(jwt.header)
    tp.json_encode(jwt.claims)
  end
  local verdict = F.result("policy:evaluate", policy:evaluate(data, 1800000000))
  if verdict then F.tostring("tostring(verdict)", verdict) end
  if jwt then
    verdict = F.result("policy:evaluate(jwt)", policy:evaluate(jwt, 1800000000))
    if verdict then F.tostring("tostring(verdict)", verdict) end
  end
  -- Under a small size limit, the same text gives the same answer or too_large.
  local small, msg, code = F.result("decode(max_size)", tp.decode(data, { max_size = 64 }))
  if not small and code ~= "too_large" and jwt then
    F.finding("decode", "max_size=64 failed with " .. tostring(msg) .. " where the default succeeded")
  end
end
