-- The denylist loader and journal: any file content loads into a
-- Denylist or fails (`malformed`, `too_large`); a loaded list answers
-- every method, adds and purges (rewriting the file), and reads back what
-- it wrote: the same count, the same answers.
local tp = require "tokenpolicy.core"
local F = require "fuzzlib"

local NOW = 1800000000

return function(data)
  local path = F.write("denylist", data)
  os.remove(path .. ".lock")
  local list = F.result("denylist", tp.denylist(path))
  F.result("denylist(max_size)", tp.denylist(path, { max_size = 64 }))
  if not list then return end
  F.tostring("tostring(denylist)", list)
  local n = list:count()
  -- Probe the jtis of the file's lines.
  local probes = 0
  for jti in data:gmatch("([^ \n]+) ") do
    list:contains(jti, NOW)
    probes = probes + 1
    if probes > 16 then break end
  end
  list:contains("\0 not a jti", NOW)
  F.result("add", list:add("fuzz-jti", NOW + 60))
  if not list:contains("fuzz-jti", NOW) then F.finding("denylist", "an added jti is not contained") end
  local purged = F.result("purge", list:purge(NOW))
  F.result("reload", list:reload())
  local back = F.result("denylist(reread)", tp.denylist(path))
  if not back then F.finding("denylist", "cannot read back the file it wrote") end
  if back:count() ~= list:count() then
    F.finding("denylist", ("wrote %d entries, read back %d (loaded %d, purged %s)"):format(list:count(),
      back:count(), n, tostring(purged)))
  end
  if not back:contains("fuzz-jti", NOW) then F.finding("denylist", "the added jti is not in the file") end
  back:close()
  list:close()
end
