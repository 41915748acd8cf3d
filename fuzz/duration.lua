-- duration and format_duration: any text gives an integer or the fail
-- triple; format_duration's output reads back: exactly under a day, cut
-- to whole hours (toward zero) from a day on, within duration's range
-- (Go's: 2^63 ns, about 292 years).
local tp = require "tokenpolicy.core"
local F = require "fuzzlib"

local RANGE = 9223372036  -- whole seconds in 2^63 - 1 nanoseconds

local function reads_back(n)
  local text = tp.format_duration(n)
  local back, msg = tp.duration(text)
  local want = n
  if n >= 86400 or n <= -86400 then want = n - math.fmod(n, 3600) end
  if back ~= want then
    F.finding("format_duration", ("%d formats as %q, which reads back as %s (%s), not %d"):format(n, text,
      tostring(back), tostring(msg), want))
  end
end

return function(data)
  local n = F.result("duration", tp.duration(data))
  if n ~= nil then
    if math.type(n) ~= "integer" then F.finding("duration", "not an integer: " .. tostring(n)) end
    if n >= -RANGE and n <= RANGE then reads_back(n) end
  end
  -- The input's first 8 bytes as an integer within the range.
  if #data >= 8 then
    reads_back(math.fmod(string.unpack("<i8", data), RANGE + 1))
  end
end
