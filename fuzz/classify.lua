-- classify: any text gives a classification that prints readably and
-- never holds the token (only its secret-free facts).
local tp = require "tokenpolicy"
local F = require "fuzzlib"

return function(data)
  local c = F.result("classify", tp.classify(data))
  if c then
    if type(c.kind) ~= "string" then F.finding("classify", "kind is " .. tostring(c.kind)) end
    local s = F.tostring("tostring(classify)", c)
    if #data >= 24 and not data:find("^%s") and s:find(data, 1, true) then
      F.finding("classify", "the printed classification holds the whole token")
    end
  end
end
