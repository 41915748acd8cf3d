-- Loaded by busted before the spec files (see .busted).  Nothing global is
-- set here: specs require "helpers.crypto" themselves.
--
-- Every spec of every file ends with a full collection, after the file's
-- own after_each hooks: the __gc metamethods of whatever the spec left
-- unreachable run while it is still the spec being reported, so that under
-- ASan or valgrind a fault in a __gc path is reported next to its name, not
-- at some later spec or at exit.  The root context's after_each (busted's
-- API, not a global at this point) runs after every `it` of every file.
local busted = require "busted"

busted.after_each(function() collectgarbage() end)

-- And once more when a file ends: its file-level locals are gone by then.
busted.subscribe({ "file", "end" }, function()
  collectgarbage()
  return nil, true
end)
