--- Reading an Arvados cluster configuration (config.yml) into a token policy.
--
-- `require "tokenpolicy"` offers `policy_from_arvados` from this module as
-- `tp.policy_from_arvados`; lyaml is loaded only when a file is to be read, so a
-- parsed table needs neither YAML nor I/O. The policy itself is the C
-- core's (`tp.policy{...}`): this module only reads the configuration the
-- way Arvados' config loader does.
-- @module tokenpolicy.arvados_config

local core = require "tokenpolicy.core"
local util = require "tokenpolicy.util"

local fail = util.fail

local M = {}

-- Arvados config files are small (tens of KiB); this only keeps a wrong
-- path (a disk image, /dev/zero) from being read whole.
M.MAX_SIZE = 16 * 1024 * 1024

-- At most 32 printable ASCII characters of text from the configuration, as
-- the C core shows attacker- or user-controlled text in messages.
local function printable(s)
  s = tostring(s)
  local cut = #s > 32
  s = s:sub(1, 32):gsub("[^\32-\126]", "?")
  return cut and s .. "..." or s
end

local function is_null(v)
  return v == nil or v == core.null or (package.loaded.lyaml ~= nil and v == package.loaded.lyaml.null)
end

-- All file reading of this module: the text of the file at path, or the
-- fail triple (`not_found`, `io`, `too_large`).
-- Through the core's non-blocking reader: a FIFO or a device at the path
-- fails at once instead of hanging or reading forever.
local function read_file(path)
  local text, msg, code = core.read_config(path, { max_size = M.MAX_SIZE })
  if not text then
    return nil, msg, code
  end
  return text
end

local function parse_yaml(path)
  local text, msg, code = read_file(path)
  if not text then return nil, msg, code end
  local found, lyaml = pcall(require, "lyaml")
  if not found then
    error("policy_from_arvados: reading a file needs lyaml (Debian: lua-yaml, LuaRocks: lyaml)", 0)
  end
  local ok, doc = pcall(lyaml.load, text)
  if not ok then
    -- lyaml's messages are "line:column: problem", without the text
    -- around it, which may hold secrets (SystemRootToken).
    return fail("malformed", ("%s: invalid YAML (%s)"):format(path, tostring(doc):sub(1, 120)))
  end
  return doc
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = printable(k) end
  table.sort(keys)
  return keys
end

-- The section `name` of cluster (absent: an empty table).
local function section(cluster, prefix, name)
  local s = cluster[name]
  if is_null(s) then return {} end
  if type(s) ~= "table" then
    return nil, ("%s.%s is not a mapping"):format(prefix, name)
  end
  return s
end

-- The units Go's time.ParseDuration knows; tp.duration knows "d" as well.
local GO_UNITS = { ns = true, us = true, ["\u{b5}s"] = true, ["\u{3bc}s"] = true, ms = true, s = true, m = true,
                   h = true }

-- Why Go would refuse text that tp.duration parses, or nil: a bare number
-- (only "0" is one, after a sign) or a unit Go does not have.
local function not_go(text)
  local rest = text:gsub("^[+-]", "", 1)
  if rest == "0" then return nil end
  if rest:match("^[%d.]+$") then return "missing unit" end
  for unit in rest:gmatch("[^%d.]+") do
    if not GO_UNITS[unit] then return ('unknown unit "%s"'):format(printable(unit)) end
  end
  return nil
end

-- A duration setting as Arvados reads one (its Duration type: Go duration
-- text, or the number 0).  Returns seconds, or nil and a message for
-- `malformed`; a negative duration, which Go and Arvados take, is
-- returned as it is.
local function duration(value, where)
  if is_null(value) then return 0 end
  if math.type(value) == "float" and value == math.floor(value) and value > -2 ^ 63 and value < 2 ^ 63 then
    value = math.tointeger(value)
  end
  if math.type(value) == "integer" then
    if value == 0 then return 0 end
    return nil, ('%s: invalid duration "%d": missing unit (Arvados reads Go durations)'):format(where, value)
  end
  if type(value) ~= "string" then
    local shown = type(value) == "table" and "a list or mapping" or printable(value)
    return nil, ("%s: a duration is text like \"12h\", not %s"):format(where, shown)
  end
  local seconds, msg = core.duration(value)
  if not seconds then
    return nil, ("%s: %s"):format(where, (msg:gsub("^malformed: ", "")))
  end
  local why = not_go(value)
  if why then
    return nil, ('%s: invalid duration "%s": %s (Arvados reads Go durations)'):format(where, printable(value), why)
  end
  return seconds
end

local function boolean(value, where)
  if is_null(value) then return nil end
  if type(value) ~= "boolean" then
    return nil, ("%s: not true or false (%s)"):format(where, printable(value))
  end
  return value
end

-- The SystemRootToken as Arvados' loader checks it (only a-z, A-Z and 0-9;
-- a short one is a warning).  The token itself never goes into a message.
local function root_token(value, where, warnings)
  if is_null(value) or value == "" then return nil end
  if type(value) ~= "string" then
    return nil, ("%s: not text"):format(where)
  end
  if value:find("[^%w]") then
    return nil, ("%s: unacceptable characters in token (only a-z, A-Z, 0-9)"):format(where)
  end
  if #value < 32 then
    warnings[#warnings + 1] = ("%s: shorter than 32 characters"):format(where)
  end
  return value
end

-- The settings of one cluster, or nil and a message for `malformed`.
-- Problems Arvados' loader only logs go into warnings.
local function settings(cluster, prefix, warnings)
  local api, login, workbench, err
  api, err = section(cluster, prefix, "API")
  if not api then return nil, err end
  login, err = section(cluster, prefix, "Login")
  if not login then return nil, err end
  workbench, err = section(cluster, prefix, "Workbench")
  if not workbench then return nil, err end

  local s = {}
  for _, setting in ipairs {
    { "max_token_lifetime", api, "API.MaxTokenLifetime" },
    { "login_token_lifetime", login, "Login.TokenLifetime" },
    { "idle_timeout", workbench, "Workbench.IdleTimeout" },
  } do
    local name, where = setting[1], prefix .. "." .. setting[3]
    local value = setting[2][setting[3]:match("%.(.*)")]
    local seconds
    seconds, err = duration(value, where)
    if not seconds then return nil, err end
    if seconds < 0 then
      -- Arvados' server applies each rule only when it is above zero.
      warnings[#warnings + 1] = ("%s: %s is negative: off, as in Arvados' server (its rules apply only above "
        .. "zero; its rake tasks would take it as is)"):format(where, printable(value))
      seconds = 0
    end
    s[name] = seconds
  end

  -- IssueTrustedTokens is the key; TrustLoginTokens was renamed before
  -- any release, so Arvados' loader calls it unknown and ignores it.
  local issue
  issue, err = boolean(login.IssueTrustedTokens, prefix .. ".Login.IssueTrustedTokens")
  if err then return nil, err end
  if login.TrustLoginTokens ~= nil then
    warnings[#warnings + 1] = ("%s.Login.TrustLoginTokens: unknown key, ignored (Arvados reads "
      .. "Login.IssueTrustedTokens)"):format(prefix)
  end
  if issue == nil then issue = true end  -- Arvados' default
  s.issue_trusted_tokens = issue

  s.system_root_token, err = root_token(cluster.SystemRootToken, prefix .. ".SystemRootToken", warnings)
  if err then return nil, err end
  return s
end

local OPTIONS = {
  cluster = "string",
  compat = function(v)
    if v ~= "docs" and v ~= "arvados" then return 'must be "docs" or "arvados"' end
  end,
}

-- The warnings list prints one warning a line (or "no warnings").
local Warnings = {
  __name = "tokenpolicy.ArvadosConfigWarnings",
  __tostring = function(list)
    if #list == 0 then return "no warnings" end
    return table.concat(list, "\n")
  end,
}

--- Builds a policy from an Arvados configuration: API.MaxTokenLifetime,
-- Login.TokenLifetime, Login.IssueTrustedTokens, Workbench.IdleTimeout and
-- SystemRootToken of one cluster, read as Arvados' config loader reads
-- them (Go durations; unknown keys reported and ignored).
-- @tparam string|table config the path of a config.yml, or its parsed content
-- @tparam[opt] table opts `cluster` (the cluster id; required when the
--   configuration has several clusters), `compat` ("docs" or "arvados")
-- @treturn tokenpolicy.Policy the policy
-- @treturn {string,...} warnings: what Arvados' loader would log (unknown
--   keys, a short SystemRootToken) or read differently (a negative
--   duration, taken as off); an empty list when there is nothing to say
-- @return or the fail triple: `malformed` (YAML, the structure, a
--   setting, the cluster choice), `not_found`, `io`, `too_large`
function M.policy_from_arvados(config, opts)
  local where = "configuration"
  if type(config) ~= "string" and type(config) ~= "table" then
    util.argerror(1, "policy_from_arvados", ("path or table expected, got %s"):format(type(config)))
  end
  opts = util.check_opts(opts, OPTIONS, "policy_from_arvados", 2)

  if type(config) == "string" then
    where = config
    local doc, msg, code = parse_yaml(config)
    if msg then return nil, msg, code end
    config = doc
  end
  if type(config) ~= "table" or is_null(config.Clusters) or type(config.Clusters) ~= "table" then
    return fail("malformed", ("%s has no Clusters mapping"):format(where))
  end

  local ids = sorted_keys(config.Clusters)
  local id = opts.cluster
  if id == nil then
    if #ids == 0 then
      return fail("malformed", ("%s has no clusters"):format(where))
    elseif #ids > 1 then
      return fail("malformed", ("%s has %d clusters (%s): choose one with {cluster = ...}")
        :format(where, #ids, table.concat(ids, ", ")))
    end
    id = next(config.Clusters)
  end
  local cluster = config.Clusters[id]
  if cluster == nil then
    return fail("malformed", ("%s has no cluster %s (it has %s)")
      :format(where, printable(id), #ids > 0 and table.concat(ids, ", ") or "none"))
  end
  if type(id) ~= "string" then
    return fail("malformed", ("%s: cluster ids are text, not %s"):format(where, printable(id)))
  end
  if is_null(cluster) then cluster = {} end
  if type(cluster) ~= "table" then
    return fail("malformed", ("Clusters.%s is not a mapping"):format(printable(id)))
  end

  local warnings = setmetatable({}, Warnings)
  local s, err = settings(cluster, "Clusters." .. printable(id), warnings)
  if not s then return fail("malformed", err) end
  s.compat = opts.compat
  local policy, msg, code = core.policy(s)
  if not policy then return nil, msg, code end
  return policy, warnings
end

return M
