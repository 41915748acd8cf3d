-- A child process for spec/13-denylist_spec.lua: adds count entries named
-- <prefix>-<n> (expiring at exp) to the denylist at path, one add at a time.
-- count "forever" keeps adding until the process is killed.
-- usage: lua5.x spec/helpers/denylist_writer.lua PATH PREFIX COUNT EXP
local tp = require "tokenpolicy"

local path, prefix, count, exp = arg[1], arg[2], arg[3], math.tointeger(tonumber(arg[4]))
local list = assert(tp.denylist(path))
local n = 0
while count == "forever" or n < tonumber(count) do
  n = n + 1
  assert(list:add(prefix .. "-" .. n, exp))
end
list:close()
