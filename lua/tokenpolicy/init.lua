--- tokenpolicy: find, read, verify, judge and end bearer tokens.
--
-- `require "tokenpolicy"` returns the C core's functions themselves (no
-- wrappers on the hot path) plus `_VERSION`.
-- @module tokenpolicy

local core = require "tokenpolicy.core"

local tokenpolicy = {}
for name, value in pairs(core) do
  tokenpolicy[name] = value
end
tokenpolicy._VERSION = core._VERSION

return tokenpolicy
