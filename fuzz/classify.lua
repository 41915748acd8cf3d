-- classify: any text gives a classification that prints readably and
-- never holds the token (only its secret-free facts).
local tp = require "tokenpolicy"
local F = require "fuzzlib"

-- The printed forms of sample tokens of every kind: text found there is the
-- printed form's own wording, not a token that leaked.
local wording = {}
for _, sample in ipairs { "opaque-sample-token", ("A"):rep(40), "v2/zzzzz-gj3su-0123456789abcde/" .. ("s"):rep(50),
  "v2/zzzzz-gj3su-0123456789abcde/" .. ("s"):rep(50) .. "/zzzzz-dz642-0123456789abcde", ("a"):rep(50),
  "root-/CN=Joe Doe-app-0123456789abcdef0123456789abcdef",
  "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjoxfQ.c2ln", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln" } do
  wording[#wording + 1] = tostring(tp.classify(sample))
end

local function in_wording(s)
  for _, w in ipairs(wording) do
    if w:find(s, 1, true) then return true end
  end
  return false
end

return function(data)
  local c = F.result("classify", tp.classify(data))
  if c then
    if type(c.kind) ~= "string" then F.finding("classify", "kind is " .. tostring(c.kind)) end
    local s = F.tostring("tostring(classify)", c)
    if #data >= 24 and not data:find("^%s") and s:find(data, 1, true) and not in_wording(data) then
      F.finding("classify", "the printed classification holds the whole token")
    end
  end
end
