-- json_decode / json_encode round trip: text decodes to a value or the
-- fail triple; a decoded value encodes (it never raises: decode makes
-- only what JSON can hold), and the encoding is a fixed point: it decodes
-- to the same value and encodes to the same text.
local tp = require "tokenpolicy.core"
local F = require "fuzzlib"

return function(data)
  local v, _, code = F.result("json_decode", tp.json_decode(data))
  if v == nil then
    if code ~= "malformed" and code ~= "too_large" then F.finding("json_decode", "code " .. code) end
    return
  end
  local text = tp.json_encode(v)
  local v2, msg = tp.json_decode(text)
  if v2 == nil then F.finding("json round trip", "json_encode wrote what json_decode refuses: " .. msg) end
  if not F.same(v, v2) then F.finding("json round trip", "the value changed: " .. text) end
  local text2 = tp.json_encode(v2)
  if text2 ~= text then F.finding("json round trip", "encode is not a fixed point: " .. text .. " / " .. text2) end
  -- The b64url helpers on the same bytes: encode then decode is the identity.
  local back = tp.b64url_decode(tp.b64url_encode(data))
  if back ~= data then F.finding("b64url", "round trip changed the bytes") end
  F.result("b64url_decode", tp.b64url_decode(data))
end
