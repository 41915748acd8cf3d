--- Shared helpers of the Lua modules: the fail triple and option checking.
--
-- Every Lua workflow returns expected failures as the fail triple and
-- raises for misuse, exactly as the C core does; these two helpers are the
-- only places that build either, so the wording is the same everywhere.
-- @module tokenpolicy.util

local M = {}

--- The fail triple: `nil, "code: message", "code"`.
-- @tparam string code a stable code (see docs/api.md)
-- @tparam string message what went wrong, never holding a secret
-- @return nil, string, string
function M.fail(code, message)
  return nil, code .. ": " .. message, code
end

--- Raises "bad argument #n to 'fname' (message)" at the caller's caller.
-- @tparam integer n the argument position
-- @tparam string fname the public function's name
-- @tparam string message
-- @tparam[opt=3] integer level the error level (3: the public function's caller)
function M.argerror(n, fname, message, level)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, message), level or 3)
end

local function type_of(value)
  local t = type(value)
  if t == "number" and math.type(value) == "integer" then
    return "integer"
  end
  return t
end

--- Checks an options table against a specification and returns it (or an
-- empty table when `opts` is nil).
--
-- `spec` maps each option name to the type it must have: a type name
-- ("string", "table", "boolean", "function", "number", "integer"), several
-- joined by "|" ("string|table"), "any", or a function that returns an
-- error message for a bad value (or nil). Unknown names and wrong types
-- raise an argument error naming the option.
-- @tparam ?table opts
-- @tparam table spec
-- @tparam string fname the public function's name
-- @tparam[opt=1] integer n the argument position of `opts`
-- @treturn table
function M.check_opts(opts, spec, fname, n)
  n = n or 1
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    M.argerror(n, fname, "table expected, got " .. type(opts), 4)
  end
  for name, value in pairs(opts) do
    if type(name) ~= "string" then
      M.argerror(n, fname, "option names must be strings", 4)
    end
    local want = spec[name]
    if want == nil then
      M.argerror(n, fname, ("unknown option '%s'"):format(name), 4)
    end
    if type(want) == "function" then
      local why = want(value)
      if why then
        M.argerror(n, fname, ("option '%s' %s"):format(name, why), 4)
      end
    elseif want ~= "any" then
      local got, ok = type_of(value), false
      for alternative in want:gmatch("[^|]+") do
        ok = ok or alternative == got or (alternative == "number" and got == "integer")
      end
      if not ok then
        M.argerror(n, fname, ("option '%s' must be %s, got %s"):format(name, want:gsub("|", " or "), type(value)), 4)
      end
    end
  end
  return opts
end

return M
