--- tokenpolicy: find, read, verify, judge and end bearer tokens.
--
-- `require "tokenpolicy"` returns the C core's functions themselves (no
-- wrappers on the hot path) plus `_VERSION`, and `discover` and `classify`
-- from the Lua modules, loaded when first used.
-- @module tokenpolicy

local core = require "tokenpolicy.core"

local tokenpolicy = {}
for name, value in pairs(core) do
  tokenpolicy[name] = value
end
tokenpolicy._VERSION = core._VERSION

-- Workflow functions written in Lua, loaded on first use so that a plain
-- `require "tokenpolicy"` (HAProxy's hot path) loads only the C core.
local lazy = {
  discover = "tokenpolicy.discovery",
  classify = "tokenpolicy.classify",
  policy_from_arvados = "tokenpolicy.arvados_config",
}

setmetatable(tokenpolicy, {
  __index = function(t, name)
    local module = lazy[name]
    if module then
      local fn = require(module)[name]
      rawset(t, name, fn)
      return fn
    end
  end,
})

return tokenpolicy
