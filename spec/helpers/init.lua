-- Loaded by busted before every spec file.  Collect garbage after each test
-- so that __gc bugs in the C core surface at the test that caused them.
local busted = require "busted"
busted.after_each(function() collectgarbage() collectgarbage() end)
