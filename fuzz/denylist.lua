-- The denylist loader and journal: any file content loads into a
-- Denylist or fails (`malformed`, `too_large`); a loaded list answers
-- every method.  The input is the file, optionally followed by a line
-- "--append--" and lines another writer appends later.  The oracles:
-- after the append, reload (which reads only the appended lines) and a
-- fresh load agree (the same count, the same answers for the jtis of the
-- input); an add is contained and durable; what the list wrote (appended
-- or compacted) reads back with the same count.
local tp = require "tokenpolicy.core"
local F = require "fuzzlib"

local NOW = 1800000000

-- Up to 16 jtis named in the text (what precedes a space on a line).
local function jtis(text)
  local list = {}
  for jti in text:gmatch("([^ \n]+) ") do
    list[#list + 1] = jti
    if #list >= 16 then break end
  end
  return list
end

local function agree(what, a, b, probes)
  if a:count() ~= b:count() then
    F.finding(what, ("%d entries, but a fresh load has %d"):format(a:count(), b:count()))
  end
  for _, jti in ipairs(probes) do
    for _, at in ipairs { 0, NOW, math.maxinteger } do
      if a:contains(jti, at) ~= b:contains(jti, at) then
        F.finding(what, ("contains(%q, %d) differs from a fresh load's"):format(jti:sub(1, 40), at))
      end
    end
  end
end

return function(data)
  local initial, appended = data:match("^(.-)\n%-%-append%-%-\n(.*)$")
  if not initial then initial, appended = data, nil end
  local path = F.write("denylist", initial)
  os.remove(path .. ".lock")
  local list = F.result("denylist", tp.denylist(path))
  F.result("denylist(max_size)", tp.denylist(path, { max_size = 64 }))
  if not list then return end
  F.tostring("tostring(denylist)", list)
  local probes = jtis(data)
  probes[#probes + 1] = "fuzz-jti"
  list:contains("\0 not a jti", NOW)
  if appended then
    local f = assert(io.open(path, "ab"))
    f:write(appended)
    f:close()
    local reloaded = F.result("reload", list:reload())
    local fresh = F.result("denylist(after append)", tp.denylist(path))
    if reloaded ~= nil and fresh then agree("reload after an append", list, fresh, probes) end
    if fresh then fresh:close() end
    if reloaded == nil then list:close() return end
  end
  local added = F.result("add", list:add("fuzz-jti", NOW + 60))
  if added and not list:contains("fuzz-jti", NOW) then F.finding("denylist", "an added jti is not contained") end
  local back = F.result("denylist(reread)", tp.denylist(path))
  if added and not back then F.finding("denylist", "cannot read back the file it appended to") end
  if back then
    agree("the list after add", list, back, probes)
    back:close()
  end
  local purged = F.result("purge", list:purge(NOW))
  back = F.result("denylist(after purge)", tp.denylist(path))
  if purged and not back then F.finding("denylist", "cannot read back the file purge wrote") end
  if back then
    agree("the list after purge", list, back, probes)
    back:close()
  end
  list:close()
end
