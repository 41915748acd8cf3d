--- Shared oracles and helpers of the fuzz targets (fuzz/<target>.lua).
--
-- A target returns a function of one input (a string); the harness
-- (fuzz/harness.c) aborts on any Lua error out of it.  The oracles here
-- raise with a message that says what was broken, so that the crash
-- report explains the finding.
local M = {}

--- The codes a fail triple may carry (DESIGN.md and docs/api.md).
M.CODES = {}
for code in ([[malformed too_large alg_not_allowed unknown_key bad_signature expired not_yet_valid
  issued_in_future bad_issuer bad_audience bad_type missing_claim unsupported_crit revoked
  exceeds_max_lifetime no_expiry idle not_found symlink not_owner insecure_permissions io
  http unreachable timeout unauthorized unavailable no_policy policy_violation]]):gmatch("%S+") do
  M.CODES[code] = true
end

local function shown(v)
  if type(v) == "string" then
    return ("%q"):format(#v > 200 and v:sub(1, 200) .. "..." or v)
  end
  return tostring(v)
end

--- Raises "<what>: <why>" (a finding).
function M.finding(what, why)
  error(("FINDING in %s: %s"):format(what, why), 2)
end

--- Checks the result of a call against the contract: a value, or the fail
-- triple `nil, "code: message", "code"` with a known code (a 4th value
-- only for `unavailable`: Retry-After seconds or nil).  Returns the values.
-- @tparam string what the call, for the message
function M.result(what, ...)
  local n = select("#", ...)
  local v, msg, code = ...
  if v ~= nil then return ... end
  if type(msg) ~= "string" or type(code) ~= "string" then
    M.finding(what, ("nil without a fail triple: %s, %s"):format(shown(msg), shown(code)))
  end
  if not M.CODES[code] then M.finding(what, "unknown error code " .. shown(code)) end
  if msg:sub(1, #code + 2) ~= code .. ": " then
    M.finding(what, ("message %s does not start with its code %s"):format(shown(msg), code))
  end
  if n > 3 and not (n == 4 and code == "unavailable") then
    M.finding(what, ("%d values in a fail triple (code %s)"):format(n, code))
  end
  return ...
end

--- As `result`, for calls that may also answer a plain nil (absent).
function M.maybe(what, ...)
  if select("#", ...) <= 1 and (...) == nil then return nil end
  return M.result(what, ...)
end

--- tostring(v), which must give a string and raise nothing.
function M.tostring(what, v)
  local s = tostring(v)
  if type(s) ~= "string" then M.finding(what, "tostring gave a " .. type(s)) end
  return s
end

--- Checks that text holds no whole secret (raw or standard base64).
function M.no_secret(what, text, secret)
  if type(text) ~= "string" then return end
  if text:find(secret, 1, true) then M.finding(what, "a secret in " .. shown(text)) end
end

--- Splits s at every occurrence of sep (plain) into a list.
function M.split(s, sep, max)
  local out, at = {}, 1
  while #out + 1 < (max or math.huge) do
    local i, j = s:find(sep, at, true)
    if not i then break end
    out[#out + 1] = s:sub(at, i - 1)
    at = j + 1
  end
  out[#out + 1] = s:sub(at)
  return out
end

--- The prefix of every command a target runs: without the sanitizer
-- preload of `make asan` (spec 34 replays targets under it), which makes
-- LeakSanitizer abort tools such as mktemp that never free.
M.SH = "env -u LD_PRELOAD "

-- The sandbox directory of this process, made once under TMPDIR (the
-- runner, fuzz/run.sh, points TMPDIR at a directory it removes).
local sandbox
function M.sandbox()
  if not sandbox then
    local pipe = assert(io.popen(M.SH .. "mktemp -d \"${TMPDIR:-/tmp}/tpfuzz.XXXXXX\"", "r"))
    sandbox = pipe:read("l")
    pipe:close()
    assert(sandbox and sandbox:find("/tpfuzz%."), "mktemp failed")
    M.sandbox_dir = sandbox  -- for fuzz/replay.lua, which removes it
  end
  return sandbox
end

--- Writes data to the file name in the sandbox, replacing it, and returns
-- its path.  The sandbox is the harness's own directory: plain io.
function M.write(name, data)
  local path = M.sandbox() .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

--- The bytes of the file at path.
function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- A JSON value, deep-compared (tables by content; [] and {} are the same).
function M.same(a, b, depth)
  depth = depth or 0
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then
    if type(a) == "number" and math.type(a) ~= math.type(b) then return false end
    return a == b or (a ~= a and b ~= b)
  end
  if depth > 100 then return false end
  for k, v in pairs(a) do
    if not M.same(v, b[k], depth + 1) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

return M
